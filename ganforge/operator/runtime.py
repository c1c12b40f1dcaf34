"""One reconcile pass for one job: read, decide (pure), act, count. Shared by the kopf handlers."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from ganforge.api.training_job import GANTrainingJobSpec, GANTrainingJobStatus
from ganforge.operator.children import JobRef
from ganforge.operator.kube import Kube
from ganforge.operator.metrics import OperatorMetrics
from ganforge.operator.reconcile import Event, Observed, invalid_spec, reconcile
from ganforge.operator.settings import OperatorSettings

log = logging.getLogger("ganforge.operator")

CONFLICT_RETRY_SECONDS = 0.2


@dataclass
class OperatorRuntime:
    kube: Kube
    settings: OperatorSettings
    metrics: OperatorMetrics
    _wakeups: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)

    # -- wake-ups: pod events cut the wait between passes short ------------------------------
    def wakeup_event(self, namespace: str, name: str) -> asyncio.Event:
        return self._wakeups.setdefault((namespace, name), asyncio.Event())

    def wake(self, namespace: str, name: str) -> None:
        event = self._wakeups.get((namespace, name))
        if event is not None:
            event.set()

    def forget(self, namespace: str, name: str) -> None:
        self._wakeups.pop((namespace, name), None)
        self.metrics.set_phase(namespace, name, None)

    # -- one pass ------------------------------------------------------------------------------
    def reconcile_once(self, namespace: str, name: str) -> float | None:
        """Returns seconds until the next pass, or None when the job needs no more supervision."""
        started = time.monotonic()
        try:
            return self._pass(namespace, name)
        except ApiException as error:
            if error.status == 409:
                # Someone (often the trainer reporting progress) wrote in between: decide again.
                return CONFLICT_RETRY_SECONDS
            self.metrics.reconcile_errors.labels(f"http-{error.status}").inc()
            log.warning("reconcile %s/%s: apiserver answered %s %s", namespace, name, error.status, error.reason)
            return 2.0
        finally:
            self.metrics.reconcile_seconds.observe(time.monotonic() - started)

    def _pass(self, namespace: str, name: str) -> float | None:
        body = self.kube.get_job(namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        metadata = body["metadata"]
        job = JobRef(name, namespace, metadata["uid"])
        current = GANTrainingJobStatus.model_validate(body.get("status") or {})
        try:
            spec = GANTrainingJobSpec.model_validate(body.get("spec") or {})
        except ValidationError as error:
            problems = "; ".join(f"spec.{'.'.join(str(p) for p in item['loc'])}: {item['msg']}"
                                 for item in error.errors())
            plan = invalid_spec(current, problems, datetime.now(UTC))
        else:
            observed = Observed(self.kube.job_pods(namespace, name), self.kube.node_names(), datetime.now(UTC))
            plan = reconcile(job, spec, current, int(metadata.get("generation") or 0), observed, self.settings)
        self.kube.execute(namespace, name, metadata["resourceVersion"], plan, lambda event: _post(body, event))
        self.metrics.observe_plan(plan)
        phase = (plan.status or {}).get("phase") or current.phase
        self.metrics.set_phase(namespace, name, phase)
        if plan.status is not None:
            log.info("%s/%s: %s (gang %s)", namespace, name, phase, plan.status.get("gang"))
        return plan.requeue_after

    def stop_workers(self, namespace: str, name: str) -> int:
        """Finalizer work: SIGTERM every worker (they write an emergency checkpoint) and report how
        many are still there, so a deleted job never leaves training processes behind."""
        pods = self.kube.job_pods(namespace, name)
        for pod in pods:
            if not pod["metadata"].get("deletionTimestamp"):
                self.kube.delete_pod(namespace, pod["metadata"]["name"], force=False)
        return len(pods)


def _post(body: dict[str, Any], event: Event) -> None:
    kopf.event(body, type=event.type, reason=event.reason, message=event.message[:1024])
