"""The operator's decisions, without a cluster: spec + status + observed pods -> plan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ganforge.api.exit_codes import ExitCode
from ganforge.api.training_job import GANTrainingJobSpec, GANTrainingJobStatus
from ganforge.operator import children, naming
from ganforge.operator.reconcile import Observed, Plan, invalid_spec, reconcile
from ganforge.operator.settings import OperatorSettings

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
JOB = children.JobRef("gan", "ns", "uid-1")
SETTINGS = OperatorSettings(failure_backoff_seconds=10)


def spec(workers: int = 2, backoff_limit: int = 2, export: bool = True, **resources: Any) -> GANTrainingJobSpec:
    return GANTrainingJobSpec.model_validate({
        "dataset": {"uri": "file:///data"}, "training": {"batchSize": 64},
        "resources": {"workers": workers, "gpusPerWorker": 0, **resources}, "backoffLimit": backoff_limit,
        "export": {"enabled": export}})


def pod(gang: int, rank: int, phase: str = "Running", exit_code: int | None = None, ready: bool = True,
        node: str = "spot-1", deleting: datetime | None = None, conditions: list[dict[str, Any]] | None = None,
        message: str = "") -> dict[str, Any]:
    statuses = []
    if exit_code is not None:
        statuses = [{"name": "trainer", "state": {"terminated": {"exitCode": exit_code, "message": message}}}]
    metadata: dict[str, Any] = {"name": naming.worker_pod("gan", gang, rank),
                                "labels": {naming.JOB_LABEL: "gan", naming.GANG_LABEL: str(gang),
                                           naming.RANK_LABEL: str(rank)},
                                "ownerReferences": [JOB.owner_reference()]}
    if deleting is not None:
        metadata["deletionTimestamp"] = deleting.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"metadata": metadata, "spec": {"nodeName": node},
            "status": {"phase": phase, "containerStatuses": statuses,
                       "conditions": (conditions or []) + [{"type": "Ready", "status": str(ready)}]}}


def run(status: GANTrainingJobStatus, pods: list[dict[str, Any]], job_spec: GANTrainingJobSpec | None = None,
        nodes: tuple[str, ...] = ("spot-1", "ondemand-1"), now: datetime = NOW,
        generation: int = 1) -> tuple[Plan, GANTrainingJobStatus]:
    plan = reconcile(JOB, job_spec or spec(), status, generation, Observed(pods, set(nodes), now), SETTINGS)
    merged = status.to_wire() | (plan.status or {})
    return plan, GANTrainingJobStatus.model_validate(merged)


def launched(gang: int = 0, **fields: Any) -> GANTrainingJobStatus:
    return GANTrainingJobStatus(gang=gang, launched_gang=gang, **{"phase": "Running", **fields})


def kinds(plan: Plan) -> list[str]:
    return [m["kind"] for m in plan.create + plan.apply]


def test_new_job_creates_the_whole_gang_and_its_children() -> None:
    plan, status = run(GANTrainingJobStatus(), [])
    assert sorted(kinds(plan)) == sorted(["ServiceAccount", "Role", "RoleBinding", "Service", "NetworkPolicy",
                                          "PersistentVolumeClaim", "ConfigMap", "Pod", "Pod"])
    [policy] = [m for m in plan.create if m["kind"] == "NetworkPolicy"]
    gang = {"matchLabels": {naming.JOB_LABEL: "gan"}}
    assert policy["spec"]["podSelector"] == gang and policy["spec"]["ingress"][0] == {"from": [{"podSelector": gang}]}
    assert status.launched_gang == 0 and status.phase == "Pending" and status.start_time
    assert [e.reason for e in plan.events] == ["GangCreated"]
    for manifest in plan.create + plan.apply:
        if manifest["kind"] == "PersistentVolumeClaim":
            # The checkpoints outlive the job unless spec.checkpoint.retain is false (the finalizer).
            assert "ownerReferences" not in manifest["metadata"]
            assert manifest["metadata"]["labels"][naming.JOB_LABEL] == "gan"
        else:
            assert manifest["metadata"]["ownerReferences"][0]["uid"] == "uid-1"


def test_worker_pods_carry_the_torchrun_environment_and_spot_placement() -> None:
    plan, _ = run(GANTrainingJobStatus(), [])
    pods = [m for m in plan.create if m["kind"] == "Pod"]
    for rank, manifest in enumerate(pods):
        env = {e["name"]: e["value"] for e in manifest["spec"]["containers"][0]["env"]}
        assert env["RANK"] == str(rank) and env["WORLD_SIZE"] == "2" and env["LOCAL_RANK"] == "0"
        assert env["MASTER_ADDR"] == "gan-w0.gan" and env["MASTER_PORT"] == "29500"
        assert env["GANFORGE_JOB_NAME"] == "gan"
        assert env["GANFORGE_RUN_DIR"] == "/mnt/pvc/gan-checkpoints/checkpoints/run"
        assert manifest["spec"]["restartPolicy"] == "Never"
        assert manifest["spec"]["nodeSelector"] == {"node.ganforge.io/capacity-type": "spot"}
        assert manifest["spec"]["tolerations"][0]["key"] == "node.ganforge.io/spot"
        assert manifest["spec"]["hostname"] == f"gan-w{rank}" and manifest["spec"]["subdomain"] == "gan"


def test_a_pod_with_one_rank_per_gpu_gets_the_pet_layout_and_no_rank_of_its_own() -> None:
    plan, _ = run(GANTrainingJobStatus(), [], spec(gpusPerWorker=4))
    pods = [m for m in plan.create if m["kind"] == "Pod"]
    assert len(pods) == 2
    for rank, manifest in enumerate(pods):
        env = {e["name"]: e["value"] for e in manifest["spec"]["containers"][0]["env"]}
        # `ganforge train` in the pod starts the 4 ranks itself (ganforge.trainer.launcher).
        assert not {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"} & set(env)
        assert env["PET_NPROC_PER_NODE"] == "4" and env["PET_NNODES"] == "2" and env["PET_NODE_RANK"] == str(rank)
        assert env["PET_MASTER_ADDR"] == env["MASTER_ADDR"] == "gan-w0.gan" and env["PET_MASTER_PORT"] == "29500"
        # NCCL between the pod's GPUs needs more /dev/shm than a container runtime's 64 MiB.
        volumes = {v["name"]: v for v in manifest["spec"]["volumes"]}
        assert volumes["shm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Gi"}
        assert {"name": "shm", "mountPath": "/dev/shm"} in manifest["spec"]["containers"][0]["volumeMounts"]
    plan, _ = run(GANTrainingJobStatus(), [], spec(gpusPerWorker=1))
    assert not [v for m in plan.create if m["kind"] == "Pod" for v in m["spec"]["volumes"] if v["name"] == "shm"]


def test_gpu_requests_equal_limits() -> None:
    plan, _ = run(GANTrainingJobStatus(), [], spec(gpusPerWorker=2))
    container = next(m for m in plan.create if m["kind"] == "Pod")["spec"]["containers"][0]
    resources = container["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == "2" == resources["limits"]["nvidia.com/gpu"]


def test_a_workers_memory_request_is_its_limit() -> None:
    plan, _ = run(GANTrainingJobStatus(), [], spec(memory="3Gi"))
    container = next(m for m in plan.create if m["kind"] == "Pod")["spec"]["containers"][0]
    assert container["resources"]["requests"]["memory"] == "3Gi" == container["resources"]["limits"]["memory"]


def test_half_created_gang_is_completed_without_duplicates() -> None:
    plan, _ = run(GANTrainingJobStatus(), [pod(0, 0, phase="Pending")])
    assert [m["metadata"]["name"] for m in plan.create if m["kind"] == "Pod"] == ["gan-g0-w1"]


def test_all_running_is_running() -> None:
    plan, status = run(launched(phase="Pending"), [pod(0, 0), pod(0, 1)])
    assert status.phase == "Running" and status.workers and status.workers.ready == 2
    assert not plan.create and not plan.delete


def test_eviction_is_a_preemption_not_a_failure() -> None:
    evicted = pod(0, 1, conditions=[{"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}])
    plan, status = run(launched(), [pod(0, 0), evicted])
    assert status.gang == 1 and status.preemptions == 1 and status.failures == 0
    assert status.phase == "Restarting" and status.last_failure and status.last_failure.disruption
    assert not plan.delete, "pods are deleted only after the restart is recorded"
    assert [e.reason for e in plan.events] == ["Preempted"]


@pytest.mark.parametrize("code", [int(ExitCode.PREEMPTED), int(ExitCode.PREEMPTED_NO_CHECKPOINT)])
def test_the_trainers_preemption_exit_codes_are_disruptions(code: int) -> None:
    _, status = run(launched(), [pod(0, 0, "Failed", code), pod(0, 1)])
    assert status.preemptions == 1 and status.failures == 0


def test_lost_node_and_missing_pod_are_disruptions() -> None:
    _, status = run(launched(), [pod(0, 0, node="gone"), pod(0, 1)])
    assert status.preemptions == 1 and status.last_failure and status.last_failure.reason == "NodeLost"
    _, status = run(launched(), [pod(0, 0)])
    assert status.preemptions == 1


def test_pods_of_an_earlier_job_of_the_same_name_are_not_adopted() -> None:
    predecessor = pod(0, 0, deleting=NOW)
    predecessor["metadata"]["ownerReferences"] = [{**JOB.owner_reference(), "uid": "uid-0"}]
    plan, status = run(GANTrainingJobStatus(), [predecessor])
    # Its own gang is created in full; the predecessor's pod is neither counted nor touched.
    assert [m["metadata"]["name"] for m in plan.create if m["kind"] == "Pod"] == ["gan-g0-w0", "gan-g0-w1"]
    assert not plan.delete and status.launched_gang == 0


def test_after_restart_old_gang_is_deleted_before_the_new_one_starts() -> None:
    status = GANTrainingJobStatus(gang=1, launched_gang=0, phase="Restarting", preemptions=1)
    plan, after = run(status, [pod(0, 0), pod(0, 1, deleting=NOW)])
    assert [d.name for d in plan.delete] == ["gan-g0-w0"] and not plan.create
    assert after.launched_gang == 0
    plan, after = run(status, [])
    assert [m["metadata"]["name"] for m in plan.create if m["kind"] == "Pod"] == ["gan-g1-w0", "gan-g1-w1"]
    assert after.launched_gang == 1 and after.phase == "Restarting"
    _, after = run(after, [pod(1, 0), pod(1, 1)])
    assert after.phase == "Running" and after.preemptions == 1


def test_pods_stuck_terminating_are_force_deleted_only_where_nobody_can_run_them() -> None:
    status = GANTrainingJobStatus(gang=1, launched_gang=0, phase="Restarting")
    # Its node is gone: at once.
    plan, _ = run(status, [pod(0, 0, deleting=NOW, node="gone")])
    assert plan.delete[0].force
    # On a Ready node kubelet is still stopping it: wait, however long.
    plan, _ = run(status, [pod(0, 0, deleting=NOW - timedelta(hours=1))])
    assert not plan.delete and plan.requeue_after == 1.0
    # On a node not Ready: only past the fencing bound, for the node and for the pod.
    stuck = [pod(0, 0, deleting=NOW - timedelta(seconds=61))]

    def fenced(not_ready_for: float) -> bool:
        plan = reconcile(JOB, spec(), status, 1, Observed(stuck, {"spot-1"}, NOW, None,
                                                          {"spot-1": NOW - timedelta(seconds=not_ready_for)}),
                         SETTINGS)
        return bool(plan.delete) and plan.delete[0].force

    assert fenced(61) and not fenced(30)


def test_user_code_failure_counts_then_fails_after_backoff_limit() -> None:
    traceback = "Traceback ...\nRuntimeError: boom"
    crashed = [pod(0, 0, "Failed", int(ExitCode.INTERNAL_ERROR), message=traceback), pod(0, 1)]
    _, status = run(launched(), crashed)
    assert status.failures == 1 and status.preemptions == 0 and status.gang == 1 and status.phase == "Restarting"
    plan, status = run(launched(failures=2), crashed)
    assert status.phase == "Failed" and status.failures == 3 and status.completion_time
    failed = next(c for c in status.conditions if c.type == "Failed")
    assert failed.status == "True" and failed.reason == "InternalError" and "RuntimeError: boom" in failed.message
    assert "backoffLimit 2 exceeded" in failed.message
    assert [e.reason for e in plan.events] == ["Failed"]


def test_bad_data_fails_at_once() -> None:
    _, status = run(launched(), [pod(0, 0, "Failed", int(ExitCode.DATA_ERROR), message="no such dataset"), pod(0, 1)])
    assert status.phase == "Failed" and status.failures == 1
    assert status.last_failure and status.last_failure.reason == "DataError"
    assert "no such dataset" in next(c.message for c in status.conditions if c.type == "Failed")


def test_failed_job_stops_its_remaining_workers_but_keeps_finished_pods() -> None:
    status = GANTrainingJobStatus(gang=0, launched_gang=0, phase="Failed")
    plan, _ = run(status, [pod(0, 0, "Failed", 4), pod(0, 1)])
    assert [d.name for d in plan.delete] == ["gan-g0-w1"]


def test_disruption_wins_over_a_peer_failure() -> None:
    evicted = pod(0, 0, conditions=[{"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}])
    _, status = run(launched(), [evicted, pod(0, 1, "Failed", 1)])
    assert status.preemptions == 1 and status.failures == 0


def test_failure_backoff_delays_the_next_gang() -> None:
    status = GANTrainingJobStatus.model_validate({
        "gang": 1, "launchedGang": 0, "phase": "Restarting", "failures": 2,
        "lastFailure": {"reason": "InternalError", "time": NOW.strftime("%Y-%m-%dT%H:%M:%SZ")}})
    plan, _ = run(status, [])
    assert not plan.create and plan.requeue_after == pytest.approx(20.0)
    plan, _ = run(status, [], now=NOW + timedelta(seconds=21))
    assert plan.create


def test_all_succeeded_without_export_is_succeeded() -> None:
    done = [pod(0, 0, "Succeeded", 0), pod(0, 1, "Succeeded", 0)]
    plan, status = run(launched(), done, job_spec=spec(export=False))
    assert status.phase == "Succeeded" and status.completion_time and plan.requeue_after is None
    assert next(c for c in status.conditions if c.type == "Succeeded").status == "True"


CHECKPOINT = {"uri": "pvc://gan-checkpoints/checkpoints/ckpt-000000012800", "kimg": 12.8, "sha256": "c" * 64,
              "time": "2026-01-01T11:59:00Z"}
ARTIFACT = {"uri": "pvc://ganforge-models/gan/r0123456789", "sha256": "0123456789" + "a" * 54,
            "revision": "r0123456789", "kimg": 12.8}


def export_pod(attempt: int, phase: str = "Running", exit_code: int | None = None, message: str = "",
               conditions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    statuses = []
    if exit_code is not None:
        statuses = [{"name": "export", "state": {"terminated": {"exitCode": exit_code, "message": message}}}]
    return {"metadata": {"name": naming.export_pod("gan", attempt),
                         "labels": {naming.JOB_LABEL: "gan", naming.EXPORT_LABEL: "gan"},
                         "ownerReferences": [JOB.owner_reference()]},
            "spec": {"nodeName": "ondemand-1"},
            "status": {"phase": phase, "containerStatuses": statuses, "conditions": conditions or []}}


def exporting(**fields: Any) -> GANTrainingJobStatus:
    return GANTrainingJobStatus.model_validate({"gang": 0, "launchedGang": 0, "phase": "Exporting",
                                                "checkpoint": CHECKPOINT, **fields})


def test_training_done_goes_exporting_then_one_export_pod_with_both_claims() -> None:
    done = [pod(0, 0, "Succeeded", 0), pod(0, 1, "Succeeded", 0)]
    plan, status = run(launched(checkpoint=CHECKPOINT), done)
    assert status.phase == "Exporting" and [e.reason for e in plan.events] == ["TrainingFinished"]
    assert not any(c.type == "Succeeded" for c in status.conditions)

    plan, status = run(status, done)
    claim, export = plan.create
    assert claim["kind"] == "PersistentVolumeClaim" and claim["metadata"]["name"] == "ganforge-models"
    assert "ownerReferences" not in claim["metadata"]  # a job's deletion never takes the served models
    assert export["metadata"]["name"] == "gan-export-1" and status.export_attempts == 1
    args = export["spec"]["containers"][0]["args"]
    assert args[args.index("--checkpoint") + 1] == CHECKPOINT["uri"]
    assert args[args.index("--repository") + 1] == "pvc://ganforge-models/gan"
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in export["spec"]["volumes"]}
    read_only = {claims[m["name"]]: m.get("readOnly", False) for m in export["spec"]["containers"][0]["volumeMounts"]}
    # The export writes only the model repository; the checkpoints, the only copy of the model, stay untouched.
    assert read_only == {"gan-checkpoints": True, "ganforge-models": False}
    assert not plan.delete  # finished workers are kept for their logs

    plan, _ = run(status, [*done, export_pod(1)])
    assert plan.status is None and not plan.create


def test_a_successful_export_records_the_artifact_and_succeeds() -> None:
    import json

    plan, status = run(exporting(exportAttempts=1), [export_pod(1, "Succeeded", 0, json.dumps(ARTIFACT))])
    assert status.phase == "Succeeded" and status.artifact is not None
    assert status.artifact.revision == "r0123456789" and status.artifact.uri == ARTIFACT["uri"]
    conditions = {c.type: c for c in status.conditions}
    assert conditions["Exported"].status == "True" and conditions["Succeeded"].status == "True"
    assert [e.reason for e in plan.events] == ["Exported", "Succeeded"]


def test_an_export_error_fails_the_job_at_once_naming_the_problem() -> None:
    message = "export failed: checkpoint /mnt/pvc/gan-checkpoints/checkpoints/ckpt-1 does not verify"
    plan, status = run(exporting(exportAttempts=1), [export_pod(1, "Failed", int(ExitCode.EXPORT_ERROR), message)])
    assert status.phase == "Failed" and status.artifact is None
    failed = next(c for c in status.conditions if c.type == "Failed")
    assert failed.reason == "ExportFailed" and "does not verify" in failed.message
    assert "checkpoint is kept" in failed.message
    assert "ExportFailed" in [e.reason for e in plan.events]


def test_an_interrupted_export_is_retried_up_to_the_limit() -> None:
    evicted = export_pod(1, conditions=[{"type": "DisruptionTarget", "status": "True", "reason": "Evicted"}])
    plan, status = run(exporting(exportAttempts=1), [evicted])
    assert status.phase == "Exporting" and status.export_attempts == 2
    assert any(m["metadata"]["name"] == "gan-export-2" for m in plan.create)
    _, status = run(exporting(exportAttempts=3), [export_pod(3, "Failed", 137)])
    assert status.phase == "Failed" and "3 export attempts" in next(
        c for c in status.conditions if c.type == "Failed").message


def test_export_needs_a_checkpoint_on_a_claim() -> None:
    _, status = run(exporting(checkpoint=None), [])
    failed = next(c for c in status.conditions if c.type == "Failed")
    assert status.phase == "Failed" and "no checkpoint" in failed.message


def test_unchanged_state_writes_nothing() -> None:
    _, status = run(launched(phase="Pending"), [pod(0, 0), pod(0, 1)])
    plan, _ = run(status, [pod(0, 0), pod(0, 1)])
    assert plan.status is None and not plan.events and not plan.create and not plan.delete


def test_status_patch_leaves_trainer_fields_alone() -> None:
    plan, _ = run(GANTrainingJobStatus(), [])
    assert plan.status is not None
    assert not {"progress", "checkpoint", "metrics"} & set(plan.status)


def test_user_named_claim_is_mounted_not_created() -> None:
    job_spec = GANTrainingJobSpec.model_validate({"dataset": {"uri": "pvc://datasets/fashion"},
                                                  "checkpoint": {"uri": "pvc://ckpt/run-1"}})
    plan, _ = run(GANTrainingJobStatus(), [], job_spec)
    assert "PersistentVolumeClaim" not in kinds(plan)
    pod_spec = next(m for m in plan.create if m["kind"] == "Pod")["spec"]
    assert [v["persistentVolumeClaim"]["claimName"] for v in pod_spec["volumes"] if "persistentVolumeClaim" in v] == [
        "datasets", "ckpt"]
    env = {e["name"]: e["value"] for e in pod_spec["containers"][0]["env"]}
    assert env["GANFORGE_RUN_DIR"] == "/mnt/pvc/ckpt/run-1/run"


def test_invalid_stored_spec_fails_the_job_once() -> None:
    plan = invalid_spec(GANTrainingJobStatus(phase="Running"), "spec.model.latentDim: too large", NOW)
    assert plan.status is not None and plan.status["phase"] == "Failed"
    failed = GANTrainingJobStatus.model_validate(plan.status)
    assert next(c for c in failed.conditions if c.type == "Failed").reason == "InvalidSpec"
    assert [e.reason for e in plan.events] == ["InvalidSpec"]
    again = invalid_spec(failed, "spec.model.latentDim: too large", NOW)
    assert again.status is None and not again.events


def test_suspend_stops_the_gang_and_resume_starts_the_next_from_the_checkpoint() -> None:
    suspended = spec()
    suspended.suspend = True
    running = [pod(0, 0), pod(0, 1)]
    plan, status = run(launched(preemptions=1, failures=1), running, suspended)
    assert status.phase == "Suspended" and status.gang == 1 and status.launched_gang == 0
    assert not plan.delete, "the decision is recorded before any pod is stopped"
    assert [e.reason for e in plan.events] == ["Suspended"]
    # Next pass: the gang is stopped (SIGTERM: emergency checkpoints); nothing new starts.
    plan, status = run(status, running, suspended)
    assert sorted(d.name for d in plan.delete) == ["gan-g0-w0", "gan-g0-w1"] and not plan.create
    plan, status = run(status, [], suspended)
    assert not plan.create and status.phase == "Suspended"
    # Resume: the next gang, counted neither as a failure nor as a preemption.
    plan, status = run(status, [])
    assert status.phase == "Restarting" and status.launched_gang == 1
    assert [m["metadata"]["name"] for m in plan.create if m["kind"] == "Pod"] == ["gan-g1-w0", "gan-g1-w1"]
    assert (status.preemptions, status.failures) == (1, 1)
    assert "Resumed" in [e.reason for e in plan.events]
    assert next(c for c in status.conditions if c.type == "Suspended").status == "False"


def test_a_job_suspended_before_it_started_starts_nothing() -> None:
    suspended = spec()
    suspended.suspend = True
    plan, status = run(GANTrainingJobStatus(), [], suspended)
    assert status.phase == "Suspended" and not plan.create and status.gang == 0


def test_past_active_deadline_the_job_fails_without_counting_a_failure() -> None:
    limited = spec()
    limited.active_deadline_seconds = 600
    started = launched(start_time=(NOW - timedelta(seconds=601)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    plan, status = run(started, [pod(0, 0), pod(0, 1)], limited)
    assert status.phase == "Failed" and (status.failures, status.preemptions) == (0, 0)
    failed = next(c for c in status.conditions if c.type == "Failed")
    assert failed.reason == "DeadlineExceeded" and "600" in failed.message
    # The ended job's running pods are stopped on the next pass.
    plan, _ = run(status, [pod(0, 0), pod(0, 1)], limited)
    assert sorted(d.name for d in plan.delete) == ["gan-g0-w0", "gan-g0-w1"]
    within = launched(start_time=(NOW - timedelta(seconds=599)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    _, status = run(within, [pod(0, 0), pod(0, 1)], limited)
    assert status.phase == "Running"


def test_a_gang_that_does_not_run_within_its_launch_timeout_fails_the_job() -> None:
    limited = spec()
    limited.launch_timeout_seconds = 300
    unschedulable = pod(0, 1, "Pending", ready=False,
                        conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}])
    waiting = launched(phase="Pending", gang_launch_time=(NOW - timedelta(seconds=301)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    _, status = run(waiting, [pod(0, 0), unschedulable], limited)
    assert status.phase == "Failed" and (status.failures, status.preemptions) == (0, 0)
    failed = next(c for c in status.conditions if c.type == "Failed")
    assert failed.reason == "GangNotRunning" and "gan-g0-w1: Unschedulable" in failed.message
    recent = launched(phase="Pending", gang_launch_time=(NOW - timedelta(seconds=299)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    _, status = run(recent, [pod(0, 0), unschedulable], limited)
    assert status.phase == "Pending"


def test_finished_pods_go_after_ttl_seconds_after_finished() -> None:
    short = spec()
    short.ttl_seconds_after_finished = 3600
    ended = GANTrainingJobStatus(gang=0, launched_gang=0, phase="Succeeded",
                                 completion_time=(NOW - timedelta(seconds=600)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    finished = [pod(0, 0, "Succeeded", 0), pod(0, 1, "Succeeded", 0)]
    plan, _ = run(ended, finished, short)
    assert not plan.delete and plan.requeue_after == pytest.approx(3000.0)
    plan, _ = run(ended, finished, short, now=NOW + timedelta(seconds=3000))
    assert sorted(d.name for d in plan.delete) == ["gan-g0-w0", "gan-g0-w1"]
    plan, _ = run(ended, finished)  # without a TTL they stay for their logs
    assert not plan.delete


def gang_pods(job_spec: GANTrainingJobSpec) -> list[dict[str, Any]]:
    """The pods a launch creates, as Running pods."""
    plan, _ = run(GANTrainingJobStatus(), [], job_spec)
    pods = [m for m in plan.create if m["kind"] == "Pod"]
    for created in pods:
        created["spec"]["nodeName"] = "spot-1"
        created["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    return pods


def spec_applied(status: GANTrainingJobStatus) -> tuple[str, str]:
    [condition] = [c for c in status.conditions if c.type == "SpecApplied"]
    return condition.status, condition.reason


def test_spec_applied_says_whether_the_running_gang_has_the_current_spec() -> None:
    first = spec(backoff_limit=2)
    pods = gang_pods(first)
    _, status = run(GANTrainingJobStatus(), [], first)  # the launch, at generation 1
    _, status = run(status, pods, first)
    assert spec_applied(status) == ("True", "GangUpToDate")
    # The operator's own fields apply at once: the gang is still up to date.
    _, status = run(status, pods, spec(backoff_limit=5, export=False), generation=2)
    assert spec_applied(status) == ("True", "GangUpToDate")
    # What the trainer reads (here its cadence and the pods' memory) waits for the next gang.
    edited = spec(memory="3Gi")
    edited.checkpoint.interval_kimg = 7
    _, status = run(status, pods, edited, generation=3)
    assert spec_applied(status) == ("False", "AtNextGang")
    assert status.observed_generation == 3 and status.launched_generation == 1 and status.phase == "Running"


def test_a_kueue_queue_label_makes_each_gang_one_pod_group() -> None:
    queued = children.JobRef("gan", "ns", "uid-1", queue="team-a")
    plan = reconcile(queued, spec(), GANTrainingJobStatus(), 1, Observed([], set(), NOW), SETTINGS)
    pods = [m for m in plan.create if m["kind"] == "Pod"]
    assert len(pods) == 2
    for created in pods:
        assert created["metadata"]["labels"][naming.KUEUE_QUEUE_LABEL] == "team-a"
        assert created["metadata"]["labels"][naming.KUEUE_POD_GROUP_LABEL] == "gan-g0"
        assert created["metadata"]["annotations"][naming.KUEUE_POD_GROUP_COUNT_ANNOTATION] == "2"
    plain, _ = run(GANTrainingJobStatus(), [])
    assert not any(naming.KUEUE_QUEUE_LABEL in m["metadata"]["labels"] for m in plain.create if m["kind"] == "Pod")
