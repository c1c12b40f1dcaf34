"""Every pod the operator creates meets the `restricted` Pod Security Standard, checked here field
by field as the PodSecurity admission checks it (the e2e suite runs in namespaces that enforce it)."""

from __future__ import annotations

from typing import Any

import pytest

from ganforge.api.inference_service import RevisionStatus
from ganforge.operator import children, serving_children
from ganforge.operator.pod_security import IMAGE_USER
from tests.unit.operator.test_reconcile import JOB, SETTINGS, spec
from tests.unit.operator.test_serving_reconcile import GIS, REV1, REV2, SHA2
from tests.unit.operator.test_serving_reconcile import spec as service_spec

# The volume types `restricted` allows.
ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
                   "secret"}


def violations(pod_spec: dict[str, Any]) -> list[str]:
    found = []
    pod_context = pod_spec.get("securityContext") or {}
    if pod_spec.get("hostNetwork") or pod_spec.get("hostPID") or pod_spec.get("hostIPC"):
        found.append("host namespaces")
    for volume in pod_spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            found.append(f"volume {volume['name']}: {kinds}")
    for container in [*pod_spec.get("initContainers", []), *pod_spec["containers"]]:
        context = container.get("securityContext") or {}
        name = container["name"]
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation must be false")
        if "ALL" not in ((context.get("capabilities") or {}).get("drop") or []):
            found.append(f"{name}: capabilities must drop ALL")
        if set((context.get("capabilities") or {}).get("add") or []) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: adds capabilities")
        if context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is not True:
            found.append(f"{name}: runAsNonRoot must be true")
        if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
            found.append(f"{name}: runs as root")
        seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost")
    return found


def pods() -> dict[str, dict[str, Any]]:
    job_spec = spec()
    revision = RevisionStatus(name=REV2, uri=f"pvc://ganforge-models/gan/{REV2}", sha256=SHA2, source="job",
                              state="Ready")
    deployment = serving_children.triton_deployment(GIS, service_spec(), "fashion", REV2, revision.uri, SHA2,
                                                    SETTINGS)
    return {
        "trainer": children.worker_pod(JOB, job_spec, SETTINGS, 0, 1, "sha")["spec"],
        "export": serving_children.export_pod(JOB, job_spec, SETTINGS, "pvc://ckpt/run/ckpt-1", 0)["spec"],
        "triton": deployment["spec"]["template"]["spec"],
        "analysis": serving_children.analysis_pod(GIS, service_spec(), "fashion", revision, REV1, 0, 0,
                                                  SETTINGS)["spec"],
    }


@pytest.mark.parametrize("kind", ["trainer", "export", "triton", "analysis"])
def test_every_pod_the_operator_creates_is_restricted(kind: str) -> None:
    pod_spec = pods()[kind]
    assert violations(pod_spec) == []
    assert pod_spec["securityContext"]["runAsUser"] == IMAGE_USER


def test_the_check_finds_what_admission_would_refuse() -> None:
    pod_spec = pods()["trainer"]
    pod_spec["containers"][0]["securityContext"] = {}
    pod_spec["volumes"].append({"name": "cache", "hostPath": {"path": "/var/cache"}})
    found = violations(pod_spec)
    assert any("allowPrivilegeEscalation" in v for v in found) and any("hostPath" in v for v in found)


def test_only_rank_0_gets_an_api_token() -> None:
    rank0 = children.worker_pod(JOB, spec(), SETTINGS, 0, 0, "sha")["spec"]
    assert rank0["automountServiceAccountToken"] is True  # it reports the job's status
    assert rank0["serviceAccountName"] == "gan-trainer"
    for kind, pod_spec in pods().items():  # the trainer there is rank 1
        assert pod_spec["automountServiceAccountToken"] is False, kind


def test_the_shared_trainer_cache_is_a_claim_which_restricted_allows() -> None:
    settings = SETTINGS.model_copy(update={"trainer_cache_claim": "gan-cache"})
    pod_spec = children.worker_pod(JOB, spec(), settings, 0, 1, "sha")["spec"]
    assert {"name": "cache", "persistentVolumeClaim": {"claimName": "gan-cache"}} in pod_spec["volumes"]
    env = {e["name"]: e["value"] for e in pod_spec["containers"][0]["env"]}
    assert env["GANFORGE_CACHE_DIR"] == "/var/cache/ganforge" and violations(pod_spec) == []
