"""Prometheus metrics of the operator, on a private registry served at --metrics-port."""

from __future__ import annotations

import threading
from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from ganforge.api.training_job import Phase
from ganforge.operator.reconcile import FAILED, PREEMPTED, WORKER_FAILED, Plan

PHASES: tuple[Phase, ...] = get_args(Phase)


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconcile_seconds = Histogram(
            "ganforge_operator_reconcile_seconds", "Time of one reconcile pass (observe, decide, act).",
            registry=self.registry, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.reconcile_errors = Counter(
            "ganforge_operator_reconcile_errors", "Reconcile passes that raised (retried).", ["kind"],
            registry=self.registry)
        self.jobs = Gauge("ganforge_operator_jobs", "GANTrainingJobs by phase.", ["phase"], registry=self.registry)
        self.preemptions = Counter("ganforge_operator_preemptions", "Gangs restarted after a disruption.",
                                   registry=self.registry)
        self.restarts = Counter("ganforge_operator_restarts", "Gangs restarted, by cause.", ["cause"],
                                registry=self.registry)
        self.failed_jobs = Counter("ganforge_operator_failed_jobs", "Jobs that ended Failed.", registry=self.registry)
        self._phase_of: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        for phase in PHASES:
            self.jobs.labels(phase).set(0)

    def serve(self, port: int) -> None:
        if port:
            start_http_server(port, registry=self.registry)

    def observe_plan(self, plan: Plan) -> None:
        for event in plan.events:
            if event.reason == PREEMPTED:
                self.preemptions.inc()
                self.restarts.labels("preemption").inc()
            elif event.reason == WORKER_FAILED:
                self.restarts.labels("failure").inc()
            elif event.reason == FAILED:
                self.failed_jobs.inc()

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
