"""Operator metrics follow the status transitions it wrote, once each."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException

from ganforge.api import metrics as catalogue
from ganforge.api.inference_service import GANInferenceServiceStatus
from ganforge.api.training_job import GANTrainingJobStatus
from ganforge.operator.metrics import OperatorMetrics

CREATED = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def _value(metrics: OperatorMetrics, name: str, labels: dict[str, str] | None = None) -> float | None:
    return metrics.registry.get_sample_value(name, labels or {})


def _job(**status: Any) -> GANTrainingJobStatus:
    return GANTrainingJobStatus.model_validate(status)


def _running(at: str) -> list[dict[str, str]]:
    return [{"type": "Running", "status": "True", "reason": "AllWorkersRunning", "message": "",
             "lastTransitionTime": at}]


def test_every_family_in_the_catalogue_is_registered() -> None:
    families = {family.name: family.type for family in OperatorMetrics().registry.collect()}
    assert {metric.base_name: metric.kind for metric in catalogue.OPERATOR_METRICS} == families
    assert _value(OperatorMetrics(), "ganforge_build_info", {"component": "operator",
                                                              "version": _build_version()}) == 1


def _build_version() -> str:
    from ganforge.api.metrics import build_version

    return build_version()


def test_first_start_counts_startup_and_pending_time() -> None:
    metrics = OperatorMetrics()
    before = _job(phase="Pending", gangLaunchTime="2026-01-01T12:00:10Z")
    after = _job(phase="Running", gangLaunchTime="2026-01-01T12:00:10Z", conditions=_running("2026-01-01T12:00:40Z"))
    metrics.observe_job(CREATED, before, after)
    assert _value(metrics, "ganforge_operator_job_startup_seconds_sum") == 40
    assert _value(metrics, "ganforge_operator_gang_pending_seconds_sum") == 30
    assert _value(metrics, "ganforge_operator_recovery_seconds_count", {"cause": "preemption"}) == 0


def test_recovery_runs_from_the_disruption_to_the_new_gang_running() -> None:
    metrics = OperatorMetrics()
    failure = {"reason": "NodeLost", "disruption": True, "time": "2026-01-01T13:00:00Z"}
    before = _job(phase="Running", preemptions=0, conditions=_running("2026-01-01T12:00:40Z"))
    restarting = _job(phase="Restarting", preemptions=1, lastFailure=failure)
    metrics.observe_job(CREATED, before, restarting)
    assert _value(metrics, "ganforge_operator_restarts_total", {"cause": "preemption"}) == 1
    running = _job(phase="Running", preemptions=1, lastFailure=failure, gangLaunchTime="2026-01-01T13:00:05Z",
                   conditions=_running("2026-01-01T13:01:15Z"))
    metrics.observe_job(CREATED, restarting, running)
    assert _value(metrics, "ganforge_operator_recovery_seconds_sum", {"cause": "preemption"}) == 75
    assert _value(metrics, "ganforge_operator_recovery_seconds_count", {"cause": "preemption"}) == 1
    assert _value(metrics, "ganforge_operator_job_startup_seconds_count") == 0  # not a first start
    # The same status seen again (a later pass, or a restarted operator) counts nothing.
    metrics.observe_job(CREATED, running, running)
    assert _value(metrics, "ganforge_operator_recovery_seconds_count", {"cause": "preemption"}) == 1
    assert _value(metrics, "ganforge_operator_restarts_total", {"cause": "preemption"}) == 1


def test_outcomes_count_each_ending_once() -> None:
    metrics = OperatorMetrics()
    metrics.observe_job(CREATED, _job(phase="Running", failures=1), _job(phase="Failed", failures=2))
    metrics.observe_job(CREATED, _job(phase="Failed", failures=2), _job(phase="Failed", failures=2))
    metrics.observe_job(CREATED, _job(phase="Exporting"), _job(phase="Succeeded"))
    rolled_back = {"service": "s", "revision": "r1", "phase": "RolledBack"}
    metrics.observe_job(CREATED, _job(phase="Succeeded"), _job(phase="Succeeded", rollout=rolled_back))
    metrics.observe_job(CREATED, _job(phase="Succeeded", rollout=rolled_back),
                        _job(phase="Succeeded", rollout=rolled_back))
    assert _value(metrics, "ganforge_operator_job_outcomes_total", {"outcome": "failed"}) == 1
    assert _value(metrics, "ganforge_operator_job_outcomes_total", {"outcome": "succeeded"}) == 1
    assert _value(metrics, "ganforge_operator_job_outcomes_total", {"outcome": "rolled_back"}) == 1
    assert _value(metrics, "ganforge_operator_restarts_total", {"cause": "failure"}) == 1


def test_service_gauges_follow_the_latest_analysis_and_leave_with_the_service() -> None:
    metrics = OperatorMetrics()
    measurements = [{"name": "deltaKid", "value": 0.02, "bound": 0.01, "verdict": "Fail"},
                    {"name": "p95LatencyMs", "value": 31.0, "bound": 100.0, "verdict": "Pass"}]
    rollout = {"revision": "r2", "fromRevision": "r1", "strategy": "canary", "phase": "RolledBack",
               "analyses": [{"step": 0, "attempt": 0, "weight": 10, "pod": "p", "state": "Fail",
                             "measurements": measurements}]}
    before = GANInferenceServiceStatus.model_validate({"canaryWeight": 10})
    after = GANInferenceServiceStatus.model_validate({"canaryWeight": 0, "rollout": rollout, "revisions": [
        {"name": "r1", "uri": "pvc://m/r1", "sha256": "0" * 64, "source": "job", "state": "Ready"},
        {"name": "r2", "uri": "pvc://m/r2", "sha256": "1" * 64, "source": "job", "state": "Retired"}]})
    metrics.observe_service("ns", "gen", before, after)
    metrics.observe_service("ns", "gen", after, after)
    labels = {"namespace": "ns", "service": "gen"}
    assert _value(metrics, "ganforge_serving_canary_weight_ratio", labels) == 0
    assert _value(metrics, "ganforge_serving_ready_revisions", labels) == 1
    assert _value(metrics, "ganforge_serving_gate_value", {**labels, "gate": "deltaKid"}) == pytest.approx(0.02)
    assert _value(metrics, "ganforge_serving_gate_passing", {**labels, "gate": "deltaKid"}) == 0
    assert _value(metrics, "ganforge_serving_gate_passing", {**labels, "gate": "p95LatencyMs"}) == 1
    assert _value(metrics, "ganforge_operator_rollout_outcomes_total", {"outcome": "rolled_back"}) == 1
    metrics.forget_service("ns", "gen")
    assert _value(metrics, "ganforge_serving_gate_value", {**labels, "gate": "deltaKid"}) is None
    assert _value(metrics, "ganforge_serving_canary_weight_ratio", labels) is None


def test_job_evaluation_follows_status_metrics_and_leaves_with_the_job() -> None:
    metrics = OperatorMetrics()
    metrics.set_evaluation("ns", "gan", {"fd_domain": 12.5, "kid_domain": 0.01})
    metrics.set_evaluation("ns", "gan", {"fd_domain": 9.0})
    labels = {"namespace": "ns", "job_name": "gan"}
    assert _value(metrics, "ganforge_job_evaluation", {**labels, "metric": "fd_domain"}) == 9.0
    assert _value(metrics, "ganforge_job_evaluation", {**labels, "metric": "kid_domain"}) is None
    metrics.set_evaluation("ns", "gan", None)
    assert _value(metrics, "ganforge_job_evaluation", {**labels, "metric": "fd_domain"}) is None


class _Answer:
    def __init__(self, status: int) -> None:
        self.status = status


def test_api_requests_are_counted_by_verb_and_code() -> None:
    metrics = OperatorMetrics()
    api = ApiClient(Configuration())
    answers: list[int] = [200, 404]

    def send(method: str, url: str, *args: Any, **kwargs: Any) -> _Answer:
        status = answers.pop(0)
        if status >= 300:
            raise ApiException(status=status, reason="Not Found")
        return _Answer(status)

    api.rest_client.request = send  # type: ignore[method-assign]
    metrics.count_api_requests(api)
    api.rest_client.request("GET", "https://apiserver/api/v1/pods")
    with pytest.raises(ApiException):
        api.rest_client.request("GET", "https://apiserver/api/v1/pods/missing")
    assert _value(metrics, "ganforge_operator_api_requests_total", {"verb": "GET", "code": "200"}) == 1
    assert _value(metrics, "ganforge_operator_api_requests_total", {"verb": "GET", "code": "404"}) == 1


def test_jobs_by_phase_move_with_each_job() -> None:
    metrics = OperatorMetrics()
    metrics.set_phase("ns", "a", "Running")
    metrics.set_phase("ns", "b", "Running")
    metrics.set_phase("ns", "a", "Succeeded")
    assert _value(metrics, "ganforge_operator_jobs", {"phase": "Running"}) == 1
    assert _value(metrics, "ganforge_operator_jobs", {"phase": "Succeeded"}) == 1
    metrics.set_phase("ns", "b", None)
    assert _value(metrics, "ganforge_operator_jobs", {"phase": "Running"}) == 0


def test_jobs_by_phase_stay_exact_under_concurrent_passes() -> None:
    """Passes run in worker threads; the per-phase counts must add up whatever the interleaving."""
    metrics = OperatorMetrics()
    phases = ["Pending", "Running", "Restarting", "Running", "Succeeded"]

    def one_job(index: int) -> None:
        for phase in phases:
            metrics.set_phase("ns", f"job-{index}", phase)
        if index % 2:
            metrics.set_phase("ns", f"job-{index}", None)

    threads = [threading.Thread(target=one_job, args=(i,)) for i in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert _value(metrics, "ganforge_operator_jobs", {"phase": "Succeeded"}) == 32
    assert all(_value(metrics, "ganforge_operator_jobs", {"phase": p}) == 0 for p in ("Pending", "Running"))
