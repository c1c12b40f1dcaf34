"""Serving what a job exports, and bad input: nothing breaks the stable endpoint.

One small conditional job trains and exports; a GANInferenceService serves it through real Triton
while a client calls the stable Service without pause. Then the service is pointed at a truncated
model file, a model file Triton cannot load (listed in a manifest that verifies), a sha256 that
does not match and a revision that does not exist: each is refused with a condition naming the
file, the mismatch or Triton's exit, never receives traffic, and the client sees no failure.
Services whose job does not exist or failed say so.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiClient

from ganforge.api.inference_service import PLURAL as SERVICE_PLURAL
from ganforge.api.inference_service import TRITON_HTTP_PORT
from ganforge.api.training_job import PLURAL
from ganforge.local.provisioner import claim_host_path
from tests.e2e.cluster import apply, status_of
from tests.helpers import StableClient, eventually, fast_job


def _service(name: str, source: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "ganforge.io/v1alpha1", "kind": "GANInferenceService", "metadata": {"name": name},
            "spec": {"source": source, "triton": {"replicas": 1, "cpu": "500m", "memory": "1Gi", "maxBatchSize": 16}}}


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


def _altered_copy(revision: Path, target: Path, onnx_bytes: bytes, *, listed: bool, note: str) -> str:
    """A copy of a revision with another model.onnx. `listed`: its manifest lists the new file (the
    copy verifies); else the entry still describes the original (verification refuses it). The
    manifest gets a note either way, so its sha256 (the revision's identity) is new."""
    shutil.copytree(revision, target)
    onnx_file = target / "model" / "1" / "model.onnx"
    onnx_file.write_bytes(onnx_bytes)
    manifest = json.loads((target / "manifest.json").read_text())
    if listed:
        manifest["files"]["model/1/model.onnx"] = {"bytes": len(onnx_bytes),
                                                    "sha256": hashlib.sha256(onnx_bytes).hexdigest()}
    manifest["note"] = note
    raw = json.dumps(manifest, indent=2, sort_keys=True).encode()
    (target / "manifest.json").write_bytes(raw)
    return hashlib.sha256(raw).hexdigest()


@pytest.mark.timeout(1500)
def test_bad_revisions_and_sources_never_disturb_the_stable_endpoint(
        operator: Path, local_api: ApiClient, local_core: client.CoreV1Api, local_namespace: str,
        tmp_path: Path) -> None:
    namespace = local_namespace
    job = fast_job("tiny", export={"enabled": True},
                   dataset={"uri": "fake://blobs?n=512&classes=4", "format": "fake", "resolution": 16,
                            "conditional": True})
    apply(operator, namespace, job, tmp_path)
    apply(operator, namespace, fast_job("no-data", dataset={"uri": "file:///nonexistent/data", "format": "idx",
                                                             "resolution": 16}), tmp_path)
    apply(operator, namespace, _service("orphan", {"trainingJob": "nope"}), tmp_path)
    apply(operator, namespace, _service("from-failed", {"trainingJob": "no-data"}), tmp_path)

    orphan = eventually(lambda: (s := status_of(local_api, namespace, SERVICE_PLURAL, "orphan")).get("phase")
                        == "Degraded" and s, 120, "the orphan service to be Degraded")
    degraded = _condition(orphan, "Degraded")
    assert degraded["reason"] == "SourceNotFound" and "GANTrainingJob nope not found" in degraded["message"]
    from_failed = eventually(lambda: _condition(status_of(local_api, namespace, SERVICE_PLURAL, "from-failed"),
                                                "Degraded").get("reason") == "SourceFailed"
                             and status_of(local_api, namespace, SERVICE_PLURAL, "from-failed"), 300,
                             "the service of a failed job to be Degraded")
    assert "DataError" in _condition(from_failed, "Degraded")["message"]

    trained = eventually(lambda: (s := status_of(local_api, namespace, PLURAL, "tiny")).get("phase")
                         in ("Succeeded", "Failed") and s, 600, "the small job to train and export")
    assert trained["phase"] == "Succeeded", json.dumps(trained, indent=2)
    artifact = trained["artifact"]
    apply(operator, namespace, _service("tiny-gen", {"trainingJob": "tiny"}), tmp_path)
    ready = eventually(lambda: (s := status_of(local_api, namespace, SERVICE_PLURAL, "tiny-gen")).get("phase")
                       == "Ready" and s, 300, "tiny-gen to be Ready")
    stable = ready["stableRevision"]
    assert stable == artifact["revision"]

    ip = local_core.read_namespaced_service("tiny-gen", namespace).spec.cluster_ip
    caller = StableClient(f"{ip}:{TRITON_HTTP_PORT}", "tiny-gen", (4, 1, 16, 16), num_classes=4)
    caller.start()
    try:
        repository = Path(str(claim_host_path(local_core, namespace, "ganforge-models")))
        model = (repository / "tiny" / stable / "model" / "1" / "model.onnx").read_bytes()
        truncated_sha = _altered_copy(repository / "tiny" / stable, repository / "tiny" / "truncated", model[:1000],
                                      listed=False, note="model.onnx cut short")
        # Verifies (the manifest lists this file), but it is no ONNX model: Triton cannot load it.
        unloadable_sha = _altered_copy(repository / "tiny" / stable, repository / "tiny" / "unloadable",
                                       b"not an ONNX model\n" * 64, listed=True, note="model.onnx replaced")
        bad_sources = [
            ({"uri": "pvc://ganforge-models/tiny/truncated", "sha256": truncated_sha},
             "model/1/model.onnx: 1000 bytes, the manifest says"),
            ({"uri": "pvc://ganforge-models/tiny/unloadable", "sha256": unloadable_sha}, "tritonserver exited"),
            ({"uri": artifact["uri"], "sha256": "0" * 64}, f"sha256 is {artifact['sha256']}, expected 000"),
            ({"uri": "pvc://ganforge-models/tiny/r9999999999", "sha256": "9" * 64}, "does not exist"),
        ]
        for source, expected in bad_sources:
            apply(operator, namespace, _service("tiny-gen", {"artifact": source}), tmp_path)
            bad = f"r{source['sha256'][:10]}"

            def refused(revision: str = bad) -> dict[str, Any] | None:
                status = status_of(local_api, namespace, SERVICE_PLURAL, "tiny-gen")
                entry = next((r for r in status.get("revisions", []) if r["name"] == revision), {})
                return status if entry.get("state") == "Failed" else None

            status = eventually(refused, 180, f"revision {bad} to be refused")
            message = _condition(status, "Degraded")["message"]
            assert status["phase"] == "Degraded" and expected in message, message
            assert status["stableRevision"] == stable and _condition(status, "Ready")["status"] == "True"
            selector = local_core.read_namespaced_service("tiny-gen", namespace).spec.selector
            assert selector["ganforge.io/revision"] == stable
            def gone(revision: str = bad) -> bool:
                selector = f"ganforge.io/revision={revision}"
                return not local_core.list_namespaced_pod(namespace, label_selector=selector).items

            eventually(gone, 120, f"the pods of {bad} to go")
        time.sleep(2)
    finally:
        caller.stop.set()
        caller.join(timeout=30)
    print(f"\nstable endpoint during four refused revisions: {caller.requests} requests, "
          f"{len(caller.failures)} failures")
    assert caller.requests > 50 and not caller.failures, caller.failures[:3]
