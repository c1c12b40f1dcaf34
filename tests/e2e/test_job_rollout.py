"""Jobs with spec.rollout on `ganforge local`: the first job's model is served by the service it
creates; later jobs go through the service's rollout, where a person decides what the gates
cannot: these small jobs on synthetic data evaluate nothing, so their artifacts carry no reference
statistics and every quality gate is inconclusive. The rollout pauses; `ganforge rollout promote`
promotes one job's model, even across an operator restart, and `ganforge rollout abort` rolls
another's back, which fails that job with the reason."""

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
from ganforge.api.training_job import PLURAL
from ganforge.local.install import OPERATOR_NAMESPACE, kubectl
from ganforge.operator import naming, rollout_cli
from tests.e2e.cluster import apply, status_of
from tests.helpers import eventually, fast_job

ROLLOUT = {"service": "blobs", "gates": {"serving": {"durationSeconds": 2}}}


def _submit(kubeconfig: Path, namespace: str, name: str, seed: int, tmp_path: Path) -> None:
    apply(kubeconfig, namespace, fast_job(name, export={"enabled": True}, training={"seed": seed}, rollout=ROLLOUT),
          tmp_path)


def _rollout(kubeconfig: Path, namespace: str, action: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert rollout_cli.main([action, "blobs", "-n", namespace, "--kubeconfig", str(kubeconfig)]) == 0
    return out.getvalue()


@pytest.mark.timeout(1800)
def test_jobs_roll_out_through_their_service_and_a_person_decides_what_the_gates_cannot(
        operator: Path, local_api: ApiClient, local_core: client.CoreV1Api, local_namespace: str,
        tmp_path: Path) -> None:
    namespace = local_namespace

    def job(name: str) -> dict[str, Any]:
        return status_of(local_api, namespace, PLURAL, name)

    def finished(name: str) -> dict[str, Any] | None:
        status = job(name)
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    _submit(operator, namespace, "first", 1, tmp_path)
    first = eventually(lambda: finished("first"), 600, "the first job to train, export and be served")
    assert first["phase"] == "Succeeded", first
    assert first["rollout"]["phase"] == "Promoted" and "the first revision" in first["rollout"]["message"]
    service = status_of(local_api, namespace, SERVICE_PLURAL, "blobs")
    assert service["stableRevision"] == first["artifact"]["revision"]

    _submit(operator, namespace, "second", 2, tmp_path)
    paused = eventually(lambda: (s := job("second")).get("rollout", {}).get("phase") == "Paused" and s, 600,
                        "the second job's rollout to pause")
    assert paused["phase"] == "RollingOut"
    text = _rollout(operator, namespace, "status")
    assert "Paused" in text and "carries no reference statistics" in text, text

    # An operator restarted mid-rollout resumes from the status.
    kubectl(operator, "-n", OPERATOR_NAMESPACE, "delete", "pod", "-l", "app.kubernetes.io/name=ganforge-operator")
    assert "ganforge.io/promote=" in _rollout(operator, namespace, "promote")
    second = eventually(lambda: finished("second"), 300, "the promoted job to succeed")
    assert second["phase"] == "Succeeded" and "by a person" in second["rollout"]["message"]
    assert status_of(local_api, namespace, SERVICE_PLURAL, "blobs")["stableRevision"] == second["artifact"]["revision"]

    _submit(operator, namespace, "third", 3, tmp_path)
    eventually(lambda: job("third").get("rollout", {}).get("phase") == "Paused", 600, "the third rollout to pause")
    _rollout(operator, namespace, "abort")
    third = eventually(lambda: finished("third"), 300, "the aborted job to fail")
    failed = next(c for c in third["conditions"] if c["type"] == "Failed")
    assert third["phase"] == "Failed" and failed["reason"] == "RolledBack"
    assert "aborted by a person" in failed["message"]
    service = status_of(local_api, namespace, SERVICE_PLURAL, "blobs")
    assert service["stableRevision"] == second["artifact"]["revision"]
    assert service["rollout"]["phase"] == "RolledBack"

    # Deleting the finished jobs (a GitOps prune, say) takes neither their checkpoints nor the model
    # the service serves: the stable revision stays Ready after the job that made it is gone.
    for name in ("first", "second", "third"):
        kubectl(operator, "-n", namespace, "delete", "gtj", name, "--wait=true", timeout=180)
        kept = local_core.read_namespaced_persistent_volume_claim(naming.checkpoint_claim(name), namespace)
        assert kept.metadata.deletion_timestamp is None, name
    time.sleep(10)  # the service was woken by each deletion; give its passes time to act on it
    service = status_of(local_api, namespace, SERVICE_PLURAL, "blobs")
    stable = second["artifact"]["revision"]
    assert service["stableRevision"] == stable, service
    assert next(r for r in service["revisions"] if r["name"] == stable)["state"] == "Ready", service["revisions"]
    repository = second["artifact"]["uri"].removeprefix("pvc://").split("/")[0]
    assert local_core.read_namespaced_persistent_volume_claim(repository, namespace).metadata.deletion_timestamp is None
