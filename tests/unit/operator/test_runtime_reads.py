"""When the operator reads the apiserver: an idle job costs nothing, and every write is decided on
fresh reads, never on what a lagging watch showed. The apiserver here is a recording stand-in;
what the runtime does with real watches is covered by the e2e suite."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import urllib3

from ganforge.operator.metrics import OperatorMetrics
from ganforge.operator.observe import not_ready_since
from ganforge.operator.reconcile import Plan
from ganforge.operator.runtime import API_ERROR_RETRY_SECONDS, OperatorRuntime, Seen
from ganforge.operator.settings import OperatorSettings
from tests.unit.operator.test_reconcile import JOB, launched, pod


class RecordingKube:
    """Answers reads from fixed state and records every call."""

    def __init__(self, job: dict[str, Any], pods: list[dict[str, Any]], nodes: dict[str, dict[str, Any]]) -> None:
        self.job, self.pods_now, self.nodes_now = job, pods, nodes
        self.calls: list[str] = []
        self.plans: list[Plan] = []

    def get_job(self, namespace: str, name: str) -> dict[str, Any]:
        self.calls.append("get job")
        return self.job

    def job_pods(self, namespace: str, name: str) -> list[dict[str, Any]]:
        self.calls.append("list pods")
        return self.pods_now

    def get_node(self, name: str) -> dict[str, Any] | None:
        self.calls.append(f"get node {name}")
        return self.nodes_now.get(name)

    def execute(self, namespace: str, name: str, resource_version: str, plan: Plan, emit: Any,
                plural: str = "") -> None:
        self.calls.append("execute")
        self.plans.append(plan)


def job_body(status: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": JOB.name, "namespace": JOB.namespace, "uid": JOB.uid, "generation": 1,
                         "resourceVersion": "7"},
            "spec": {"dataset": {"uri": "file:///data"}, "training": {"batchSize": 64},
                     "resources": {"workers": 2, "gpusPerWorker": 0}},
            "status": status}


READY_NODE = {"metadata": {"name": "spot-1"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
RUNNING = launched(observed_generation=1, workers={"ready": 2, "total": 2}).to_wire()


def runtime(kube: RecordingKube) -> OperatorRuntime:
    return OperatorRuntime(kube, OperatorSettings(), OperatorMetrics())  # type: ignore[arg-type]


def test_an_idle_running_job_costs_no_request() -> None:
    pods = [pod(0, 0), pod(0, 1)]
    body = job_body(RUNNING)
    kube = RecordingKube(body, pods, {"spot-1": READY_NODE})
    supervisor = runtime(kube)
    for _ in range(3):  # the first passes settle the conditions; the status they write is fed back
        kube.calls.clear()
        kube.plans.clear()
        delay = supervisor.reconcile_once(JOB.namespace, JOB.name, Seen(body, pods, {"spot-1": None}))
        if not kube.plans:
            break
        body["status"] = {**body["status"], **(kube.plans[-1].status or {})}
    assert kube.calls == [] and delay == OperatorSettings().resync_seconds


def test_a_pod_the_watch_has_not_shown_yet_is_not_lost() -> None:
    # The watch lags behind a pod created a moment ago: from the watch alone, rank 1 is missing.
    pods = [pod(0, 0), pod(0, 1)]
    body = job_body(RUNNING)
    kube = RecordingKube(body, pods, {"spot-1": READY_NODE})
    runtime(kube).reconcile_once(JOB.namespace, JOB.name, Seen(body, pods[:1], {"spot-1": None}))
    assert kube.calls[:2] == ["get job", "list pods"]
    assert all(not plan.status or plan.status.get("preemptions", 0) == 0 for plan in kube.plans)
    assert all(plan.status is None or plan.status.get("gang", 0) == 0 for plan in kube.plans)


def test_a_node_the_watch_has_not_shown_yet_is_read_before_its_pods_count_as_lost() -> None:
    pods = [pod(0, 0, node="new-node"), pod(0, 1, node="new-node")]
    body = job_body(RUNNING)
    kube = RecordingKube(body, pods, {"new-node": {**READY_NODE, "metadata": {"name": "new-node"}}})
    runtime(kube).reconcile_once(JOB.namespace, JOB.name, Seen(body, pods, {}))
    assert "get node new-node" in kube.calls
    assert all(plan.status is None or plan.status.get("gang", 0) == 0 for plan in kube.plans)


def test_a_node_that_really_is_gone_restarts_the_gang_once() -> None:
    pods = [pod(0, 0, node="gone"), pod(0, 1, node="gone")]
    body = job_body(RUNNING)
    kube = RecordingKube(body, pods, {})
    runtime(kube).reconcile_once(JOB.namespace, JOB.name, Seen(body, pods, {}))
    [plan] = kube.plans
    assert plan.status is not None and plan.status["gang"] == 1 and plan.status["preemptions"] == 1


def test_node_readiness_is_read_from_the_node_object() -> None:
    assert not_ready_since(READY_NODE) is None
    lost = {"metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown",
                                       "lastTransitionTime": "2026-01-01T10:00:00Z"}]}}
    assert not_ready_since(lost) == datetime(2026, 1, 1, 10, tzinfo=UTC)
    silent = {"metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"}, "status": {}}
    assert not_ready_since(silent) == datetime(2026, 1, 1, tzinfo=UTC)


def test_a_launch_costs_only_its_writes() -> None:
    # Creating children is idempotent and the status patch carries the resourceVersion it was
    # decided on: no fresh read is needed to start a gang.
    body = job_body({})
    kube = RecordingKube(body, [], {})
    runtime(kube).reconcile_once(JOB.namespace, JOB.name, Seen(body, [], {}))
    [plan] = kube.plans
    assert kube.calls == ["execute"] and sum(m["kind"] == "Pod" for m in plan.create) == 2


def test_a_job_the_watch_shows_from_before_the_last_status_write_is_not_decided_on_again() -> None:
    body = job_body({})
    kube = RecordingKube(body, [], {})
    supervisor = runtime(kube)
    supervisor.reconcile_once(JOB.namespace, JOB.name, Seen(body, [], {}))
    # The pod events wake the loop before the job's own event: the same, now old, resourceVersion.
    supervisor.reconcile_once(JOB.namespace, JOB.name, Seen(body, [], {}))
    assert kube.calls == ["execute"], "the gang was launched twice from a job the watch had not updated"
    # Once the watch shows the write (a newer resourceVersion), passes decide on it again.
    newer = {**body, "metadata": {**body["metadata"], "resourceVersion": "8"},
             "status": {**body["status"], **(kube.plans[0].status or {})}}
    pods = [{**p, "status": {"phase": "Pending"}} for p in kube.plans[0].create if p["kind"] == "Pod"]
    supervisor.reconcile_once(JOB.namespace, JOB.name, Seen(newer, pods, {}))
    assert "get job" not in kube.calls


class UnansweringKube(RecordingKube):
    def execute(self, namespace: str, name: str, resource_version: str, plan: Plan, emit: Any,
                plural: str = "") -> None:
        raise urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError())


def test_a_pass_the_apiserver_never_answered_is_retried_in_seconds_and_counted() -> None:
    # Not raised into kopf, whose daemon backoff would leave the job alone for a minute.
    body = job_body({})
    supervisor = runtime(UnansweringKube(body, [], {}))
    assert supervisor.reconcile_once(JOB.namespace, JOB.name, Seen(body, [], {})) == API_ERROR_RETRY_SECONDS
    assert supervisor.metrics.registry.get_sample_value(
        "ganforge_operator_reconcile_errors_total", {"kind": "ProtocolError"}) == 1
