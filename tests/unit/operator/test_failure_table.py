"""The failure semantics of docs/operator.md ("Failure semantics"), row by row: what the
infrastructure did is a disruption (counted in `preemptions`, capped by maxPreemptions); what the
workload did is a failure (counted against backoffLimit, with a backoff; some are final)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from ganforge.api.training_job import GANTrainingJobStatus
from tests.unit.operator.test_reconcile import NOW, launched, pod, run, spec


def disruption_target(reason: str) -> list[dict[str, Any]]:
    return [{"type": "DisruptionTarget", "status": "True", "reason": reason}]


def failed(rank: int, code: int | None, reason: str | None = None, pod_reason: str | None = None,
           **fields: Any) -> dict[str, Any]:
    manifest = pod(0, rank, "Failed", code, **fields)
    if reason is not None:
        manifest["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] = reason
    if pod_reason is not None:
        manifest["status"]["reason"] = pod_reason
    return manifest


@dataclass(frozen=True)
class Row:
    what: str
    pods: list[dict[str, Any]]
    outcome: str  # "disruption", "failure" (retried), "final" (fails the job), "none"
    reason: str = ""


ROWS = [
    # The infrastructure's doing.
    Row("evicted through the Eviction API", [pod(0, 0, conditions=disruption_target("EvictionByEvictionAPI")),
                                             pod(0, 1)], "disruption", "EvictionByEvictionAPI"),
    Row("preempted by the scheduler", [pod(0, 0, conditions=disruption_target("PreemptionByScheduler")),
                                       pod(0, 1)], "disruption", "PreemptionByScheduler"),
    Row("deleted by the taint manager (node NoExecute)",
        [pod(0, 0, conditions=disruption_target("DeletionByTaintManager")), pod(0, 1)], "disruption",
        "DeletionByTaintManager"),
    Row("terminated by kubelet (node pressure)", [failed(0, 137, conditions=disruption_target(
        "TerminationByKubelet")), pod(0, 1)], "disruption", "TerminationByKubelet"),
    Row("evicted by kubelet (pod reason)", [failed(0, 137, pod_reason="Evicted"), pod(0, 1)], "disruption",
        "Evicted"),
    Row("graceful node shutdown", [failed(0, 143, pod_reason="NodeShutdown"), pod(0, 1)], "disruption",
        "NodeShutdown"),
    Row("its node is gone", [pod(0, 0, node="gone"), pod(0, 1)], "disruption", "NodeLost"),
    Row("deleted by someone else", [pod(0, 0, deleting=NOW), pod(0, 1)], "disruption", "WorkerPodDeleted"),
    Row("missing", [pod(0, 1)], "disruption", "missing"),
    Row("the trainer's exit after SIGTERM (checkpoint written)", [failed(0, 75), pod(0, 1)], "disruption",
        "Preempted"),
    Row("the trainer's exit after SIGTERM (past the deadline)", [failed(0, 76), pod(0, 1)], "disruption",
        "Preempted"),
    Row("refused at admission (OutOfcpu)", [failed(0, None, pod_reason="OutOfcpu"), pod(0, 1)], "disruption",
        "OutOfcpu"),
    Row("refused at admission (device plugin)", [failed(0, None, pod_reason="UnexpectedAdmissionError"),
                                                 pod(0, 1)], "disruption", "UnexpectedAdmissionError"),
    Row("evicted rank, peer exits 7", [pod(0, 0, conditions=disruption_target("EvictionByEvictionAPI")),
                                       failed(1, 7)], "disruption", "EvictionByEvictionAPI"),
    # The workload's doing.
    Row("exception (exit 1)", [failed(0, 1), pod(0, 1)], "failure", "InternalError"),
    Row("OOM kill", [failed(0, 137, reason="OOMKilled"), pod(0, 1)], "failure", "OOMKilled"),
    Row("SIGKILL on a healthy node", [failed(0, 137), pod(0, 1)], "failure", "KilledBySignal"),
    Row("segfault (139)", [failed(0, 139), pod(0, 1)], "failure", "KilledBySignal"),
    Row("abort (134)", [failed(0, 134), pod(0, 1)], "failure", "KilledBySignal"),
    Row("exit 7 with no disrupted peer (rendezvous misconfigured)", [failed(0, 7), pod(0, 1)], "failure",
        "DistributedError"),
    Row("a crash and its peer's exit 7: one failure, the crash's", [failed(0, 7), failed(1, 1)], "failure",
        "InternalError"),
    Row("checkpoint storage not writable", [failed(0, 6), pod(0, 1)], "failure", "CheckpointStorageError"),
    Row("invalid spec (exit 3)", [failed(0, 3), pod(0, 1)], "final", "ConfigError"),
    Row("bad data (exit 4)", [failed(0, 4), pod(0, 1)], "final", "DataError"),
    Row("NaN loss (exit 5)", [failed(0, 5), pod(0, 1)], "final", "NonFiniteLoss"),
    Row("no container could run (not an admission refusal)", [failed(0, None, pod_reason="ImageNotInLocalTable"),
                                                              pod(0, 1)], "final", "ImageNotInLocalTable"),
    # A succeeded rank stays succeeded.
    Row("succeeded rank whose node is gone", [pod(0, 0, "Succeeded", 0, node="gone"), pod(0, 1)], "none"),
    Row("succeeded rank with a DisruptionTarget", [pod(0, 0, "Succeeded", 0, conditions=disruption_target(
        "DeletionByPodGC")), pod(0, 1)], "none"),
]


@pytest.mark.parametrize("row", ROWS, ids=[row.what for row in ROWS])
def test_failure_table(row: Row) -> None:
    plan, status = run(launched(), row.pods, spec(backoff_limit=2))
    counts = {"disruption": (1, 0), "failure": (0, 1), "final": (0, 1), "none": (0, 0)}[row.outcome]
    assert (status.preemptions, status.failures) == counts, status
    if row.outcome == "none":
        assert status.phase == "Running" and status.gang == 0 and not plan.delete
        return
    assert status.last_failure is not None and status.last_failure.reason == row.reason
    assert status.last_failure.disruption == (row.outcome == "disruption")
    if row.outcome == "final":
        assert status.phase == "Failed"
    else:
        assert status.phase == "Restarting" and status.gang == 1


def test_disruptions_are_capped_by_max_preemptions_without_counting_as_failures() -> None:
    job = spec()
    job.max_preemptions = 3
    evicted = [pod(0, 0, conditions=disruption_target("EvictionByEvictionAPI")), pod(0, 1)]
    _, status = run(launched(preemptions=2), evicted, job)
    assert status.phase == "Restarting" and status.preemptions == 3
    plan, status = run(launched(preemptions=3), evicted, job)
    assert status.phase == "Failed" and status.preemptions == 4 and status.failures == 0
    failed_condition = next(c for c in status.conditions if c.type == "Failed")
    assert "maxPreemptions 3 exceeded" in failed_condition.message
    assert [e.reason for e in plan.events] == ["Failed"]


def test_a_pod_refused_at_admission_is_retried_after_a_backoff() -> None:
    status = GANTrainingJobStatus.model_validate({
        "gang": 1, "launchedGang": 0, "phase": "Restarting", "preemptions": 1,
        "lastFailure": {"reason": "OutOfcpu", "disruption": True, "time": NOW.strftime("%Y-%m-%dT%H:%M:%SZ")}})
    plan, _ = run(status, [])
    assert not plan.create and plan.requeue_after == pytest.approx(10.0)
    plan, _ = run(status, [], now=NOW + timedelta(seconds=11))
    assert plan.create
    # An ordinary disruption restarts at once.
    evicted = status.model_copy(update={"last_failure": status.last_failure.model_copy(  # type: ignore[union-attr]
        update={"reason": "EvictionByEvictionAPI"})})
    plan, _ = run(evicted, [])
    assert plan.create
