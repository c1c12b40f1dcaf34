"""The GANInferenceService's decisions, without a cluster: revisions, the stable switch, failures."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ganforge.api.analysis import AnalysisResult
from ganforge.api.inference_service import GANInferenceServiceSpec, GANInferenceServiceStatus
from ganforge.operator import naming
from ganforge.operator.reconcile import DeleteObject, Plan
from ganforge.operator.serving_children import ServiceRef
from ganforge.operator.serving_reconcile import (
    ServingObserved,
    SourceArtifact,
    SourceState,
    reconcile_service,
    resolve_source,
)
from ganforge.operator.settings import OperatorSettings

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
GIS = ServiceRef("fashion", "ns", "uid-9")
SETTINGS = OperatorSettings(triton_profile="python-onnxruntime")
SHA1, SHA2 = "1" * 64, "2" * 64
REV1, REV2 = "r1111111111", "r2222222222"


def spec(**fields: Any) -> GANInferenceServiceSpec:
    return GANInferenceServiceSpec.model_validate({"source": {"trainingJob": "gan"}, **fields})


def source(sha: str | None) -> SourceState:
    if sha is None:
        return SourceState(waiting="waiting for GANTrainingJob gan to train and export (phase Running)")
    return SourceState(SourceArtifact(f"pvc://ganforge-models/gan/r{sha[:10]}", sha, "GANTrainingJob gan"))


def deployment(ready: int, replicas: int = 1, deadline_exceeded: bool = False) -> dict[str, Any]:
    conditions = [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                   "message": "ReplicaSet has timed out progressing"}] if deadline_exceeded else []
    return {"status": {"readyReplicas": ready, "replicas": replicas, "conditions": conditions}}


def analysis_pod(name: str, result: AnalysisResult | None, code: int = 0, message: str = "") -> dict[str, Any]:
    """A terminated analysis pod, as the kubelet reports it."""
    text = result.model_dump_json(by_alias=True) if result is not None else message
    return {"metadata": {"name": name, "labels": {naming.ANALYSIS_LABEL: name}},
            "status": {"phase": "Succeeded" if code == 0 else "Failed", "containerStatuses": [
                {"name": naming.ANALYSIS_CONTAINER, "state": {"terminated": {"exitCode": code, "message": text}}}]}}


def init_failed_pod(revision: str, message: str) -> dict[str, Any]:
    terminated = {"exitCode": 9, "message": message}
    return {"metadata": {"name": f"fashion-{revision}-x", "labels": {naming.REVISION_LABEL: revision}},
            "status": {"phase": "Pending", "initContainerStatuses": [
                {"name": "prepare-model", "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                 "lastState": {"terminated": terminated}}]}}


def run(status: GANInferenceServiceStatus, state: SourceState, deployments: dict[str, Any] | None = None,
        pods: list[dict[str, Any]] | None = None, gis: GANInferenceServiceSpec | None = None,
        annotations: dict[str, str] | None = None) -> tuple[Plan, GANInferenceServiceStatus]:
    observed = ServingObserved(state, deployments or {}, pods or [], NOW, annotations or {})
    plan = reconcile_service(GIS, gis or spec(), status, 3, observed, SETTINGS)
    merged = status.to_wire() | (plan.status or {})
    return plan, GANInferenceServiceStatus.model_validate(merged)


def applied(plan: Plan, kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in plan.apply if m["kind"] == kind}


def condition(status: GANInferenceServiceStatus, kind: str) -> tuple[str, str, str]:
    found = next(c for c in status.conditions if c.type == kind)
    return found.status, found.reason, found.message


def test_waiting_for_the_job_serves_nothing_and_says_why() -> None:
    plan, status = run(GANInferenceServiceStatus(), source(None))
    assert not plan.apply and status.phase == "Progressing" and status.stable_revision is None
    assert "waiting for GANTrainingJob gan" in condition(status, "Progressing")[2]
    assert condition(status, "Ready")[0] == "False"
    assert status.model_name == "fashion" and status.endpoint == "http://fashion.ns.svc:8000"


def test_a_new_revision_gets_a_deployment_and_becomes_stable_once_ready() -> None:
    plan, status = run(GANInferenceServiceStatus(), source(SHA1))
    deployment_manifest = applied(plan, "Deployment")[f"fashion-{REV1}"]
    pod_spec = deployment_manifest["spec"]["template"]["spec"]
    prepare = pod_spec["initContainers"][0]
    assert prepare["args"][prepare["args"].index("--sha256") + 1] == SHA1
    triton = pod_spec["containers"][0]
    assert "--model-control-mode=explicit" in triton["args"] and "--load-model=fashion" in triton["args"]
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/models/fashion/ready"
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert pod_spec["terminationGracePeriodSeconds"] > 20 and triton["lifecycle"]["preStop"]["sleep"]["seconds"] > 0
    # The stable Service exists from the start, selecting the first revision, whose pods become its
    # endpoints only once their model is ready.
    assert applied(plan, "Service")["fashion"]["spec"]["selector"][naming.REVISION_LABEL] == REV1
    assert status.revisions[0].state == "Loading" and status.phase == "Progressing"

    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    assert volumes["models"]["emptyDir"] == {}  # the node's disk, no limit: Kubernetes' defaults
    assert volumes["repository"]["persistentVolumeClaim"] == {"claimName": "ganforge-models", "readOnly": True}

    plan, status = run(status, source(SHA1), {REV1: deployment(ready=1)})
    assert status.stable_revision == REV1 and status.phase == "Ready"
    stable = applied(plan, "Service")["fashion"]
    assert stable["spec"]["selector"] == {naming.SERVICE_LABEL: "fashion", naming.REVISION_LABEL: REV1}
    assert [e.reason for e in plan.events] == ["RevisionReady", "Promoted"]
    assert condition(status, "Ready")[:2] == ("True", "StableServing")


def test_the_stable_keeps_serving_until_the_new_revision_is_ready_then_it_is_retired() -> None:
    _, status = run(GANInferenceServiceStatus(), source(SHA1))
    _, status = run(status, source(SHA1), {REV1: deployment(1)})
    plan, status = run(status, source(SHA2), {REV1: deployment(1)})
    assert status.stable_revision == REV1 and applied(plan, "Service")["fashion"]["spec"]["selector"][
        naming.REVISION_LABEL] == REV1
    assert {f"fashion-{REV1}", f"fashion-{REV2}"} <= set(applied(plan, "Deployment"))
    assert not plan.delete_objects and status.phase == "Progressing"

    # Ready: rolled out against the stable (ganforge.operator.rollout), which keeps serving meanwhile.
    plan, status = run(status, source(SHA2), {REV1: deployment(1), REV2: deployment(1)})
    assert status.stable_revision == REV1 and status.canary_revision == REV2
    [analysis] = plan.create
    assert status.rollout is not None and status.rollout.phase == "Progressing"

    passed = analysis_pod(analysis["metadata"]["name"], AnalysisResult(verdict="Pass", message="kidIncrease pass"))
    plan, status = run(status, source(SHA2), {REV1: deployment(1), REV2: deployment(1)}, pods=[passed])
    assert status.stable_revision == REV2 and status.canary_revision is None
    assert applied(plan, "Service")["fashion"]["spec"]["selector"][naming.REVISION_LABEL] == REV2
    assert DeleteObject("Deployment", f"fashion-{REV1}") in plan.delete_objects
    assert [r.state for r in status.revisions] == ["Retired", "Ready"]


def test_a_revision_that_does_not_verify_never_gets_traffic_and_the_stable_stays() -> None:
    _, status = run(GANInferenceServiceStatus(), source(SHA1))
    _, status = run(status, source(SHA1), {REV1: deployment(1)})
    _, status = run(status, source(SHA2), {REV1: deployment(1)})
    bad = init_failed_pod(REV2, "revision pvc://ganforge-models/gan/r2222222222 cannot be served: "
                                "/mnt/pvc/ganforge-models/gan/r2222222222/model/1/model.onnx: 1000 bytes")
    plan, status = run(status, source(SHA2), {REV1: deployment(1), REV2: deployment(0)}, [bad])
    assert status.stable_revision == REV1 and status.phase == "Degraded"
    assert applied(plan, "Service")["fashion"]["spec"]["selector"][naming.REVISION_LABEL] == REV1
    assert DeleteObject("Deployment", f"fashion-{REV2}") in plan.delete_objects
    assert DeleteObject("Deployment", f"fashion-{REV1}") not in plan.delete_objects
    degraded = condition(status, "Degraded")
    assert degraded[:2] == ("True", "RevisionFailed") and "model.onnx: 1000 bytes" in degraded[2]
    assert condition(status, "Ready")[0] == "True"  # clients of the stable endpoint are unaffected
    # Later passes keep it that way without recreating the failed revision.
    plan, status = run(status, source(SHA2), {REV1: deployment(1)})
    assert f"fashion-{REV2}" not in applied(plan, "Deployment") and status.phase == "Degraded"


def test_a_revision_never_ready_within_the_deadline_fails() -> None:
    _, status = run(GANInferenceServiceStatus(), source(SHA1))
    _, status = run(status, source(SHA1), {REV1: deployment(0, deadline_exceeded=True)})
    assert status.revisions[0].state == "Failed" and "progress deadline" in status.revisions[0].message
    assert status.stable_revision is None and status.phase == "Degraded"


def test_a_revision_whose_pod_cannot_be_scheduled_says_why_and_keeps_waiting() -> None:
    """A missing model-repository claim (or no room on any node) keeps the pod Pending: the
    scheduler's reason shows in the revision and Progressing; it is not a failure, since the claim
    may yet be created."""
    _, status = run(GANInferenceServiceStatus(), source(SHA1))
    pending = {"metadata": {"name": f"fashion-{REV1}-x", "labels": {naming.REVISION_LABEL: REV1}},
               "status": {"phase": "Pending", "conditions": [
                   {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                    "message": '0/2 nodes are available: persistentvolumeclaim "ganforge-models" not found.'}]}}
    _, status = run(status, source(SHA1), {REV1: deployment(0)}, pods=[pending])
    revision = status.revisions[0]
    assert revision.state == "Loading", revision
    assert revision.message == ('0/1 pods ready; not scheduled: 0/2 nodes are available: persistentvolumeclaim '
                                '"ganforge-models" not found.')
    assert condition(status, "Progressing")[0] == "True"
    assert 'persistentvolumeclaim "ganforge-models" not found' in condition(status, "Progressing")[2]


def test_source_problems_are_conditions_and_change_nothing_that_serves() -> None:
    _, status = run(GANInferenceServiceStatus(), source(SHA1))
    _, status = run(status, source(SHA1), {REV1: deployment(1)})
    missing = resolve_source(spec(), "ns", None)
    plan, status = run(status, missing, {REV1: deployment(1)})
    assert status.stable_revision == REV1 and f"fashion-{REV1}" in applied(plan, "Deployment")
    assert condition(status, "Degraded")[:2] == ("True", "SourceNotFound")
    assert "GANTrainingJob gan not found in namespace ns" in condition(status, "Degraded")[2]


def test_resolve_source_reads_the_job() -> None:
    failed_job = {"status": {"phase": "Failed", "conditions": [
        {"type": "Failed", "reason": "DataError", "message": "/data: no such file"}]}}
    failed = resolve_source(spec(), "ns", failed_job)
    assert failed.problem_reason == "SourceFailed" and "DataError" in failed.problem and "/data" in failed.problem
    running = resolve_source(spec(), "ns", {"status": {"phase": "Running", "progress": {"kimg": 3.2}}})
    assert running.artifact is None and "3.2 kimg" in running.waiting and not running.problem
    exported = resolve_source(spec(), "ns", {"status": {"phase": "Succeeded", "artifact": {
        "uri": "pvc://m/gan/r1111111111", "sha256": SHA1, "revision": REV1, "kimg": 12.8}}})
    assert exported.artifact == SourceArtifact("pvc://m/gan/r1111111111", SHA1, "GANTrainingJob gan at 12.8 kimg")
    pinned = spec(source={"artifact": {"uri": "pvc://m/gan/r2222222222", "sha256": SHA2}})
    assert resolve_source(pinned, "ns", None).artifact == SourceArtifact("pvc://m/gan/r2222222222", SHA2,
                                                                         "artifact pvc://m/gan/r2222222222")


def test_the_revision_history_is_bounded_but_never_loses_the_stable_one() -> None:
    _, status = run(GANInferenceServiceStatus(), source(SHA1))
    _, status = run(status, source(SHA1), {REV1: deployment(1)})
    for digit in "3456789abcdef":
        sha = digit * 64
        _, status = run(status, source(sha), {REV1: deployment(1)},
                        [init_failed_pod(f"r{sha[:10]}", "does not verify")])
        _, status = run(status, source(sha), {REV1: deployment(1)},
                        [init_failed_pod(f"r{sha[:10]}", "does not verify")])
    names = [r.name for r in status.revisions]
    assert len(names) == 10 and REV1 in names and names[-1] == "r" + "f" * 10
    assert status.stable_revision == REV1 and condition(status, "Ready")[0] == "True"


def test_the_model_volume_can_be_memory_backed_and_bounded() -> None:
    gis = spec(triton={"modelVolume": {"medium": "Memory", "sizeLimit": "512Mi"}})
    plan, _ = run(GANInferenceServiceStatus(), source(SHA1), gis=gis)
    pod_spec = applied(plan, "Deployment")[f"fashion-{REV1}"]["spec"]["template"]["spec"]
    [models] = [v for v in pod_spec["volumes"] if v["name"] == "models"]
    assert models["emptyDir"] == {"medium": "Memory", "sizeLimit": "512Mi"}
    # Triton reads only this volume; the init step writes it.
    assert [m["mountPath"] for m in pod_spec["containers"][0]["volumeMounts"]] == ["/models"]

