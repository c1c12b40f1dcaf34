"""The quality-gated rollout on `ganforge local`: real apiserver, real tritonserver, real Traefik
routing by Gateway API weights, analysis pods.

A generator trained on the real Fashion-MNIST is served; one client calls the stable endpoint
throughout, another the Gateway, where each candidate takes 25 % of the traffic, then 100 %. A good
candidate (the same generator exported at fp16) is promoted on its own; each planted bad candidate
is rolled back on its own, by the measurement that should catch it: (i) collapsed: one flat image
for every latent, (ii) NaN output for some latents, (iii) slow, past the p95 bound, (iv) subtly
worse: the run's half-way checkpoint, caught by the KID interval. The client of the stable endpoint
sees zero failed requests; the Gateway's client none while the good candidate is rolled out,
promoted and the old stable drained. A canary whose Triton is killed mid-analysis is rolled back.
"""

from __future__ import annotations

import contextlib
import io
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiClient

from ganforge.api import metrics as catalogue
from ganforge.api.inference_service import PLURAL as SERVICE_PLURAL
from ganforge.api.inference_service import TRITON_HTTP_PORT
from ganforge.local.provisioner import claim_host_path
from ganforge.operator import rollout_cli
from ganforge.operator.serving_children import model_repository_claim
from ganforge.operator.settings import OperatorSettings
from ganforge.serving.export import export_checkpoint
from ganforge.serving.model_repository import Revision
from tests.e2e.cluster import apply, assert_scraped, gateway_requests, kill_container, query_until, status_of
from tests.helpers import StableClient, eventually
from tests.planted import planted
from tests.trained_run import TrainedRun

CLAIM = "ganforge-models"
GATES = {"serving": {"durationSeconds": 4, "concurrency": 2}}
GATEWAY = {"name": "ganforge", "namespace": "ganforge-gateway", "drainSeconds": 3}


def _service(revision: Revision, gates: dict[str, Any] | None = None) -> dict[str, Any]:
    source = {"artifact": {"uri": f"pvc://{CLAIM}/fashion/{revision.path.name}", "sha256": revision.sha256}}
    return {"apiVersion": "ganforge.io/v1alpha1", "kind": "GANInferenceService", "metadata": {"name": "fashion"},
            "spec": {"source": source, "triton": {"replicas": 1, "cpu": "500m", "memory": "1Gi"},
                     "rollout": {"steps": [25, 100], "gates": gates or GATES}, "gateway": GATEWAY}}


def _serving(kubeconfig: Path, api: ApiClient, core: client.CoreV1Api, namespace: str, run: TrainedRun,
             tmp_path: Path) -> tuple[Path, Revision]:
    """The model repository claim (as a job's first export creates it) and the service, serving
    the run's final generator as its stable revision."""
    apply(kubeconfig, namespace, model_repository_claim(namespace, CLAIM, OperatorSettings()), tmp_path)
    host = eventually(lambda: claim_host_path(core, namespace, CLAIM), 120, "the model repository claim")
    repository = Path(host) / "fashion"
    stable = export_checkpoint(run.final, repository).revision
    apply(kubeconfig, namespace, _service(stable), tmp_path)
    eventually(lambda: _status(api, namespace).get("stableRevision") == stable.path.name, 300,
               "the first revision to serve")
    return repository, stable


def _decided(api: ApiClient, namespace: str, revision: str) -> dict[str, Any] | None:
    status = _status(api, namespace)
    rollout = status.get("rollout") or {}
    done = rollout.get("revision") == revision and rollout.get("phase") in ("Promoted", "RolledBack")
    return status if done else None


def _status(api: ApiClient, namespace: str) -> dict[str, Any]:
    return status_of(api, namespace, SERVICE_PLURAL, "fashion")


@pytest.mark.timeout(2400)
def test_good_candidates_are_promoted_and_bad_ones_rolled_back_while_the_stable_never_fails(
        operator: Path, gateway: str, local_cluster: Any, local_api: ApiClient, local_core: client.CoreV1Api,
        local_namespace: str, fashion_run: TrainedRun, tmp_path: Path) -> None:
    namespace = local_namespace
    repository, stable = _serving(operator, local_api, local_core, namespace, fashion_run, tmp_path)
    ip = local_core.read_namespaced_service("fashion", namespace).spec.cluster_ip
    caller = StableClient(f"{ip}:{TRITON_HTTP_PORT}", "fashion", (4, 1, 32, 32))
    # Users behind the Gateway get what the canary answers; only failed requests count here.
    user = StableClient(f"{gateway}:80", "fashion", (4, 1, 32, 32), finite=False)
    caller.start()
    user.start()

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
            status = eventually(lambda name=revision.path.name: _decided(local_api, namespace, name), 420,
                                f"the rollout of {what} to be decided")
            seconds = time.monotonic() - applied
            rollout = status["rollout"]
            assert rollout["phase"] == outcome, (what, rollout)
            last = rollout["analyses"][-1]
            measured = {m["name"]: m for m in last["measurements"]}
            # The canary took real user traffic through Traefik during its first step.
            first = rollout["analyses"][0]
            assert first["weight"] == 25, first
            routed = gateway_requests(f"http://{gateway}:9000/metrics")
            canary_requests = routed.get(f"{namespace}-fashion-{revision.path.name}-http-{TRITON_HTTP_PORT}", 0)
            assert canary_requests > 0, (what, routed)
            if outcome == "Promoted":
                expected_stable = revision.path.name
                assert [a["weight"] for a in rollout["analyses"]] == [25, 100]
                assert measured["kidIncrease"]["verdict"] == "Pass" and last["featureExtractor"] == "domain"
                # The old stable drains, then goes; no user request failed meanwhile.
                eventually(lambda: not any(r.get("drainUntil") for r in _status(local_api, namespace)["revisions"]),
                           60, "the old stable to drain")
                time.sleep(2)
                assert not [t for t in user.failure_times if t >= applied], user.failures[-3:]
            else:
                assert measured[catcher]["verdict"] == "Fail", (what, last)
            assert status["stableRevision"] == expected_stable
            kid = measured.get("kidIncrease", {})
            interval = f" KID increase {kid['value']:.3f} [{kid['lower']:.3f}, {kid['upper']:.3f}]" if kid else ""
            failed = len([t for t in user.failure_times if t >= applied])
            # From the canary's first user traffic (its first analysis starts once the Gateway
            # accepted the weight) to the decision, by the operator's own clock.
            with_traffic = (datetime.fromisoformat(rollout["finishedTime"])
                            - datetime.fromisoformat(first["startedTime"])).total_seconds()
            report.append(f"{what}: {rollout['phase']} {seconds:.0f} s after apply, {with_traffic:.0f} s after its "
                          f"first traffic; {canary_requests:.0f} user requests reached it, {failed} failed;"
                          f"{interval} {last['message']}")
        time.sleep(2)
    finally:
        for running in (caller, user):
            running.stop.set()
            running.join(timeout=30)
    print("\n" + "\n".join(report))
    print(f"stable endpoint throughout: {caller.requests} requests, {len(caller.failures)} failures; "
          f"through the Gateway: {user.requests} requests, {len(user.failures)} failures")
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
    # The cluster's Prometheus scraped the gateway and the gates the alerts and dashboards read, and
    # counted the rollbacks (tests/e2e/test_operator.py checks the rest of what they read).
    url = local_cluster.prometheus.url
    assert_scraped(url, {series for metric in (catalogue.GATEWAY_REQUESTS, catalogue.GATEWAY_REQUEST_DURATION,
                                               catalogue.SERVING_GATE_VALUE, catalogue.SERVING_GATE_PASSING)
                         for series in metric.series})
    query_until(url, 'ganforge_operator_rollout_outcomes_total{outcome="rolled_back"}',
                lambda samples: sum(float(s["value"][1]) for s in samples) >= 4)


@pytest.mark.timeout(900)
def test_a_canary_whose_triton_is_killed_mid_analysis_is_rolled_back_and_the_stable_keeps_serving(
        operator: Path, gateway: str, local_cluster: Any, local_api: ApiClient, local_core: client.CoreV1Api,
        local_namespace: str, fashion_run: TrainedRun, tmp_path: Path) -> None:
    namespace = local_namespace
    repository, served = _serving(operator, local_api, local_core, namespace, fashion_run, tmp_path)
    stable = served.path.name
    ip = local_core.read_namespaced_service("fashion", namespace).spec.cluster_ip
    caller = StableClient(f"{ip}:{TRITON_HTTP_PORT}", "fashion", (4, 1, 32, 32))
    caller.start()
    try:
        # A good generator (at fp16), with a load run long enough to kill its Triton in.
        candidate = export_checkpoint(fashion_run.final, repository, precision="fp16").revision
        name = candidate.path.name
        apply(operator, namespace, _service(candidate, {"serving": {"durationSeconds": 60}}), tmp_path)

        def analysing() -> bool:
            analyses = (_status(local_api, namespace).get("rollout") or {}).get("analyses") or []
            return bool(analyses) and analyses[-1]["state"] == "Running" and (
                _status(local_api, namespace)["rollout"]["revision"] == name)

        eventually(analysing, 300, "the canary's analysis to start")
        [pod] = local_core.list_namespaced_pod(namespace, label_selector=f"ganforge.io/revision={name}").items
        time.sleep(5)  # well inside the analysis
        kill_container(local_cluster.workdir, pod, "triton")
        status = eventually(lambda: _decided(local_api, namespace, name), 180, "the rollout to end")
        assert status["rollout"]["phase"] == "RolledBack" and "tritonserver exited" in status["rollout"]["message"]
        assert status["stableRevision"] == stable
        assert next(c for c in status["conditions"] if c["type"] == "Ready")["status"] == "True"
        time.sleep(3)
    finally:
        caller.stop.set()
        caller.join(timeout=30)
    print(f"stable endpoint while the canary died: {caller.requests} requests, {len(caller.failures)} failures")
    assert caller.requests > 20 and not caller.failures, caller.failures[:3]
