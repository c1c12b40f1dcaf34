"""Prometheus metrics of the operator, on a private registry served at --metrics-port.

Counters and histograms follow the status transitions this operator itself wrote, counted only once
the write succeeded: a pass retried after a conflict counts nothing twice, and a restarted operator
does not count again what an earlier one wrote (a job already Succeeded shows no transition).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any, get_args

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry, start_http_server

from ganforge.api import metrics as catalogue
from ganforge.api.inference_service import GANInferenceServiceStatus
from ganforge.api.metrics import build_version, collector
from ganforge.api.training_job import GANTrainingJobStatus, Phase
from ganforge.operator.observe import parse_time

PHASES: tuple[Phase, ...] = get_args(Phase)
ENDED = {"Succeeded": "succeeded", "Failed": "failed"}


def _running_since(status: GANTrainingJobStatus) -> datetime | None:
    running = next((c for c in status.conditions if c.type == "Running" and c.status == "True"), None)
    return parse_time(running.last_transition_time) if running is not None else None


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        make = lambda metric: collector(metric, self.registry)  # noqa: E731
        make(catalogue.BUILD_INFO).labels("operator", build_version()).set(1)
        self.jobs = make(catalogue.OPERATOR_JOBS)
        self.outcomes = make(catalogue.OPERATOR_JOB_OUTCOMES)
        self.restarts = make(catalogue.OPERATOR_RESTARTS)
        self.job_startup = make(catalogue.OPERATOR_JOB_STARTUP)
        self.gang_pending = make(catalogue.OPERATOR_GANG_PENDING)
        self.recovery = make(catalogue.OPERATOR_RECOVERY)
        self.reconcile_seconds = make(catalogue.OPERATOR_RECONCILE_SECONDS)
        self.reconcile_errors = make(catalogue.OPERATOR_RECONCILE_ERRORS)
        self.api_requests = make(catalogue.OPERATOR_API_REQUESTS)
        self.rollout_outcomes = make(catalogue.OPERATOR_ROLLOUT_OUTCOMES)
        self.canary_weight = make(catalogue.SERVING_CANARY_WEIGHT)
        self.ready_revisions = make(catalogue.SERVING_READY_REVISIONS)
        self.gate_value = make(catalogue.SERVING_GATE_VALUE)
        self.gate_passing = make(catalogue.SERVING_GATE_PASSING)
        self.job_evaluation = make(catalogue.JOB_EVALUATION)
        # Every label value a query may look for starts at zero, so rate() sees the first event.
        for outcome in (*ENDED.values(), "rolled_back"):
            self.outcomes.labels(outcome)
        for cause in ("preemption", "failure"):
            self.restarts.labels(cause)
            self.recovery.labels(cause)
        for outcome in ("promoted", "rolled_back"):
            self.rollout_outcomes.labels(outcome)
        self._phase_of: dict[tuple[str, str], str] = {}
        self._gates_of: dict[tuple[str, str], set[str]] = {}
        self._evaluated: dict[tuple[str, str], set[str]] = {}
        self._lock = threading.Lock()
        for phase in PHASES:
            self.jobs.labels(phase).set(0)

    def serve(self, port: int) -> None:
        if port:
            start_http_server(port, registry=self.registry)

    # -- jobs ------------------------------------------------------------------------------------
    def observe_job(self, created: datetime | None, before: GANTrainingJobStatus, after: GANTrainingJobStatus) -> None:
        """Count what one written status change says happened."""
        if after.preemptions > before.preemptions:
            self.restarts.labels("preemption").inc(after.preemptions - before.preemptions)
        if after.failures > before.failures:
            self.restarts.labels("failure").inc(after.failures - before.failures)
        if after.phase != before.phase and after.phase in ENDED:
            self.outcomes.labels(ENDED[after.phase]).inc()
        rolled_back = after.rollout is not None and after.rollout.phase == "RolledBack"
        if rolled_back and (before.rollout is None or before.rollout.phase != "RolledBack"):
            self.outcomes.labels("rolled_back").inc()
        running_since = _running_since(after)
        if after.phase != "Running" or before.phase == "Running" or running_since is None:
            return
        launched = parse_time(after.gang_launch_time)
        if launched is not None:
            self.gang_pending.observe(max((running_since - launched).total_seconds(), 0.0))
        failure = after.last_failure
        failed_at = parse_time(failure.time) if failure is not None else None
        if before.phase == "Restarting" and failure is not None and failed_at is not None:
            seconds = (running_since - failed_at).total_seconds()
            self.recovery.labels("preemption" if failure.disruption else "failure").observe(max(seconds, 0.0))
        elif after.preemptions == after.failures == 0 and created is not None:
            self.job_startup.observe(max((running_since - created).total_seconds(), 0.0))

    def set_phase(self, namespace: str, name: str, phase: str | None) -> None:
        """Record a job's phase (None: the job is gone). Passes run in several threads at once, so
        the map and the gauges change under a lock, by the one job's difference."""
        key = (namespace, name)
        with self._lock:
            before = self._phase_of.pop(key, None)
            if phase is not None:
                self._phase_of[key] = phase
            if before == phase:
                return
            if before is not None:
                self.jobs.labels(before).dec()
            if phase is not None:
                self.jobs.labels(phase).inc()

    def set_evaluation(self, namespace: str, name: str, metrics: dict[str, float] | None) -> None:
        """A job's status.metrics as gauges (None: the job is gone); a metric it no longer reports leaves."""
        key = (namespace, name)
        with self._lock:
            before = self._evaluated.pop(key, set())
            if metrics:
                self._evaluated[key] = set(metrics)
        for metric in before - set(metrics or {}):
            _remove(self.job_evaluation, namespace, name, metric)
        for metric, value in (metrics or {}).items():
            self.job_evaluation.labels(namespace, name, metric).set(value)

    # -- inference services ----------------------------------------------------------------------
    def observe_service(self, namespace: str, name: str, before: GANInferenceServiceStatus,
                        after: GANInferenceServiceStatus) -> None:
        self.canary_weight.labels(namespace, name).set(after.canary_weight / 100)
        self.ready_revisions.labels(namespace, name).set(sum(1 for r in after.revisions if r.state == "Ready"))
        rollout = after.rollout
        ended = rollout is not None and rollout.phase in ("Promoted", "RolledBack")
        was = (before.rollout.revision, before.rollout.phase) if before.rollout is not None else None
        if rollout is not None and ended and was != (rollout.revision, rollout.phase):
            self.rollout_outcomes.labels("promoted" if rollout.phase == "Promoted" else "rolled_back").inc()
        finished = [a for a in (rollout.analyses if rollout else []) if a.state != "Running" and a.measurements]
        if not finished:
            return
        gates = set()
        for measurement in finished[-1].measurements:
            gates.add(measurement.name)
            if measurement.value is not None:
                self.gate_value.labels(namespace, name, measurement.name).set(measurement.value)
            self.gate_passing.labels(namespace, name, measurement.name).set(1 if measurement.verdict == "Pass" else 0)
        with self._lock:
            self._gates_of[(namespace, name)] = gates

    def forget_service(self, namespace: str, name: str) -> None:
        """A deleted service leaves no series behind."""
        for gauge in (self.canary_weight, self.ready_revisions):
            _remove(gauge, namespace, name)
        with self._lock:
            gates = self._gates_of.pop((namespace, name), set())
        for gate in gates:
            _remove(self.gate_value, namespace, name, gate)
            _remove(self.gate_passing, namespace, name, gate)

    # -- the apiserver ---------------------------------------------------------------------------
    def count_api_requests(self, api: ApiClient) -> None:
        """Count every request the client sends, by verb and the apiserver's answer."""
        rest = api.rest_client
        send: Callable[..., Any] = rest.request

        def counted(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            try:
                response = send(method, url, *args, **kwargs)
            except ApiException as error:
                self.api_requests.labels(method, str(error.status or "error")).inc()
                raise
            except Exception:
                self.api_requests.labels(method, "error").inc()
                raise
            self.api_requests.labels(method, str(response.status)).inc()
            return response

        rest.request = counted


def _remove(gauge: Any, *labels: str) -> None:
    try:
        gauge.remove(*labels)
    except KeyError:
        pass
