"""The quality-gated rollout on `ganforge local`: real apiserver, real tritonserver, analysis pods.

A generator trained on the real Fashion-MNIST is served; a client calls the stable endpoint
throughout. A good candidate (the same generator exported at fp16) is promoted on its own; each
planted bad candidate is rolled back on its own, by the measurement that should catch it:
(i) collapsed: one flat image for every latent, (ii) NaN output for some latents, (iii) slow, past
the p95 bound, (iv) subtly worse: the run's half-way checkpoint, caught by the KID interval. The
client of the stable endpoint sees zero failed requests.
"""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiClient

from ganforge.api.inference_service import PLURAL as SERVICE_PLURAL
from ganforge.api.inference_service import TRITON_HTTP_PORT
from ganforge.local.provisioner import claim_host_path
from ganforge.operator import rollout_cli
from ganforge.operator.serving_children import model_repository_claim
from ganforge.operator.settings import OperatorSettings
from ganforge.serving.export import export_checkpoint
from ganforge.serving.model_repository import Revision
from tests.e2e.cluster import apply, status_of
from tests.helpers import StableClient, eventually
from tests.planted import planted
from tests.trained_run import TrainedRun

CLAIM = "ganforge-models"
GATES = {"serving": {"durationSeconds": 4, "concurrency": 2}}


def _service(revision: Revision) -> dict[str, Any]:
    source = {"artifact": {"uri": f"pvc://{CLAIM}/fashion/{revision.path.name}", "sha256": revision.sha256}}
    return {"apiVersion": "ganforge.io/v1alpha1", "kind": "GANInferenceService", "metadata": {"name": "fashion"},
            "spec": {"source": source, "triton": {"replicas": 1, "cpu": "500m", "memory": "1Gi"},
                     "rollout": {"gates": GATES}}}


def _status(api: ApiClient, namespace: str) -> dict[str, Any]:
    return status_of(api, namespace, SERVICE_PLURAL, "fashion")


@pytest.mark.timeout(2400)
def test_good_candidates_are_promoted_and_bad_ones_rolled_back_while_the_stable_never_fails(
        operator: Path, local_api: ApiClient, local_core: client.CoreV1Api, local_namespace: str,
        fashion_run: TrainedRun, tmp_path: Path) -> None:
    namespace = local_namespace
    # The model repository claim, as the first export of a job would create it.
    apply(operator, namespace, model_repository_claim(namespace, CLAIM, OperatorSettings()), tmp_path)
    host = eventually(lambda: claim_host_path(local_core, namespace, CLAIM), 120, "the model repository claim")
    repository = Path(host) / "fashion"
    stable = export_checkpoint(fashion_run.final, repository).revision
    apply(operator, namespace, _service(stable), tmp_path)
    eventually(lambda: _status(local_api, namespace).get("stableRevision") == stable.path.name, 300,
               "the first revision to serve")
    ip = local_core.read_namespaced_service("fashion", namespace).spec.cluster_ip
    caller = StableClient(f"{ip}:{TRITON_HTTP_PORT}", "fashion", (4, 1, 32, 32))
    caller.start()

    candidates = [
        ("good: the same generator at fp16", export_checkpoint(fashion_run.final, repository, precision="fp16")
         .revision, "Promoted", None),
        ("(iv) subtly worse: the half-way checkpoint", export_checkpoint(fashion_run.early, repository).revision,
         "RolledBack", "kidIncrease"),
        ("(i) collapsed", planted(fashion_run.final, repository, "collapsed"), "RolledBack", "diversityRatio"),
        ("(ii) NaN for some latents", planted(fashion_run.final, repository, "nan"), "RolledBack", "canaryRequests"),
        ("(iii) slow", planted(fashion_run.final, repository, "slow"), "RolledBack", "p95LatencyMs"),
    ]
    report = []
    try:
        expected_stable = stable.path.name
        for what, revision, outcome, catcher in candidates:
            applied = time.monotonic()
            apply(operator, namespace, _service(revision), tmp_path)

            def decided(name: str = revision.path.name) -> dict[str, Any] | None:
                status = _status(local_api, namespace)
                rollout = status.get("rollout") or {}
                done = rollout.get("revision") == name and rollout.get("phase") in ("Promoted", "RolledBack")
                return status if done else None

            status = eventually(decided, 420, f"the rollout of {what} to be decided")
            seconds = time.monotonic() - applied
            rollout = status["rollout"]
            assert rollout["phase"] == outcome, (what, rollout)
            last = rollout["analyses"][-1]
            measured = {m["name"]: m for m in last["measurements"]}
            if outcome == "Promoted":
                expected_stable = revision.path.name
                assert measured["kidIncrease"]["verdict"] == "Pass" and last["featureExtractor"] == "domain"
            else:
                assert measured[catcher]["verdict"] == "Fail", (what, last)
            assert status["stableRevision"] == expected_stable
            kid = measured.get("kidIncrease", {})
            interval = f" KID increase {kid['value']:.3f} [{kid['lower']:.3f}, {kid['upper']:.3f}]" if kid else ""
            report.append(f"{what}: {rollout['phase']} in {seconds:.0f} s after apply;{interval} {last['message']}")
        time.sleep(2)
    finally:
        caller.stop.set()
        caller.join(timeout=30)
    print("\n" + "\n".join(report))
    print(f"stable endpoint throughout: {caller.requests} requests, {len(caller.failures)} failures")
    assert caller.requests > 100 and not caller.failures, caller.failures[:3]

    # What a person sees: every analysis, each measurement against its bound.
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert rollout_cli.main(["status", "fashion", "-n", namespace, "--kubeconfig", str(operator)]) == 0
    text = out.getvalue()
    print(text)
    assert "RolledBack" in text and "✖ p95LatencyMs" in text
    # No analysis pod outlives its rollout.
    pods = local_core.list_namespaced_pod(namespace, label_selector="ganforge.io/analysis").items
    assert all(p.metadata.deletion_timestamp for p in pods), [p.metadata.name for p in pods]
