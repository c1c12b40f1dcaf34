"""One reconcile pass for one job: read, decide (pure), act, count. Shared by the kopf handlers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError
from urllib3.exceptions import HTTPError as TransportError

from ganforge.api.inference_service import KIND as SERVICE_KIND
from ganforge.api.inference_service import PLURAL as SERVICE_PLURAL
from ganforge.api.inference_service import GANInferenceServiceSpec, GANInferenceServiceStatus, ServiceCondition
from ganforge.api.training_job import KIND as JOB_KIND
from ganforge.api.training_job import PLURAL as JOB_PLURAL
from ganforge.api.training_job import Condition, GANTrainingJobSpec, GANTrainingJobStatus
from ganforge.operator import naming, rejections
from ganforge.operator.children import JobRef
from ganforge.operator.kube import Kube
from ganforge.operator.metrics import OperatorMetrics
from ganforge.operator.observe import not_ready_since, parse_time
from ganforge.operator.reconcile import (
    Event,
    Observed,
    Plan,
    invalid_spec,
    reconcile,
    rests_on_pods,
    rfc3339,
    stop_pod,
    upsert_condition,
)
from ganforge.operator.serving_children import ServiceRef
from ganforge.operator.serving_reconcile import ServingObserved, reconcile_service, resolve_source
from ganforge.operator.settings import OperatorSettings

log = logging.getLogger("ganforge.operator")

CONFLICT_RETRY_SECONDS = 0.2
# After an apiserver error answer, or no answer at all.
API_ERROR_RETRY_SECONDS = 2.0

# What the watches know of the nodes the job's pods are bound to: name -> not Ready since (None:
# Ready). A node missing from it does not exist, as far as the watch has seen.
NodeTable = Mapping[str, datetime | None]
StatusT = TypeVar("StatusT", GANTrainingJobStatus, GANInferenceServiceStatus)


@dataclass(frozen=True)
class Seen:
    """One job as the operator's watches last showed it: its object, its pods, and their nodes."""
    job: dict[str, Any]
    pods: list[dict[str, Any]]
    nodes: NodeTable


@dataclass
class OperatorRuntime:
    kube: Kube
    settings: OperatorSettings
    metrics: OperatorMetrics
    _wakeups: dict[tuple[str, str, str], asyncio.Event] = field(default_factory=dict)
    _rejected: dict[str, int] = field(default_factory=dict)  # consecutive rejections
    # Job -> the resourceVersion its last status write replaced, and when: until the watch shows
    # a newer one, the job it shows is known to be old.
    _replaced: dict[str, tuple[str, float]] = field(default_factory=dict)

    # -- wake-ups: child events cut the wait between passes short ------------------------------
    def wakeup_event(self, namespace: str, name: str, kind: str = JOB_KIND) -> asyncio.Event:
        return self._wakeups.setdefault((kind, namespace, name), asyncio.Event())

    def wake(self, namespace: str, name: str, kind: str = JOB_KIND) -> None:
        event = self._wakeups.get((kind, namespace, name))
        if event is not None:
            event.set()

    def wake_services_of(self, namespace: str) -> None:
        """A job changed: any service of its namespace may serve it (cheap: one event per service)."""
        for (kind, event_namespace, _), event in self._wakeups.items():
            if kind == SERVICE_KIND and event_namespace == namespace:
                event.set()

    def forget(self, namespace: str, name: str, kind: str = JOB_KIND) -> None:
        self._wakeups.pop((kind, namespace, name), None)
        if kind == JOB_KIND:
            self._replaced.pop(f"{namespace}/{name}", None)
            self.metrics.set_phase(namespace, name, None)
            self.metrics.set_evaluation(namespace, name, None)
        else:
            self.metrics.forget_service(namespace, name)

    # -- one pass ------------------------------------------------------------------------------
    def reconcile_once(self, namespace: str, name: str, seen: Seen) -> float | None:
        """Returns seconds until the next pass, or None when the job needs no more supervision."""
        return self._guarded(lambda: self._pass(namespace, name, seen), f"job {namespace}/{name}")

    def reconcile_service_once(self, namespace: str, name: str) -> float | None:
        """The same for a GANInferenceService; None once it is deleted."""
        return self._guarded(lambda: self._service_pass(namespace, name), f"service {namespace}/{name}")

    def _guarded(self, one_pass: Callable[[], float | None], key: str) -> float | None:
        started = time.monotonic()
        try:
            requeue = one_pass()
            self._rejected.pop(key, None)
            return requeue
        except rejections.Rejection as refused:
            streak = self._rejected[key] = self._rejected.get(key, 0) + 1
            self.metrics.reconcile_errors.labels(f"http-{refused.status}").inc()
            wait = rejections.retry_after(streak, self.settings.max_failure_backoff_seconds)
            log.warning("reconcile %s: a write was refused (%s), retrying in %.0f s: %s", key, refused.status,
                        wait, refused.message)
            return wait
        except ApiException as error:
            if error.status == 409:
                # Someone (often the trainer reporting progress) wrote in between: decide again.
                return CONFLICT_RETRY_SECONDS
            self.metrics.reconcile_errors.labels(f"http-{error.status}").inc()
            log.warning("reconcile %s: apiserver answered %s %s", key, error.status, error.reason)
            return API_ERROR_RETRY_SECONDS
        except TransportError as error:
            # The apiserver did not answer even after the client's own retries (restarting, or the
            # network between): try again soon, not after kopf's minute-long daemon backoff.
            self.metrics.reconcile_errors.labels(type(error).__name__).inc()
            log.warning("reconcile %s: no answer from the apiserver: %s", key, error)
            return API_ERROR_RETRY_SECONDS
        except Exception as error:
            self.metrics.reconcile_errors.labels(type(error).__name__).inc()
            raise
        finally:
            self.metrics.reconcile_seconds.observe(time.monotonic() - started)

    def _pass(self, namespace: str, name: str, seen: Seen) -> float | None:
        # First decide on what the watches showed: a job with nothing to do costs no request, and
        # a launch costs only its writes. A decision that deletes, counts or ends (rests_on_pods) is
        # made again on fresh reads, so none rests on a lagging watch (a pod created a moment ago
        # and not yet seen must not count as lost).
        body, key = seen.job, f"{namespace}/{name}"
        if body["metadata"].get("deletionTimestamp"):
            return None
        replaced_version, replaced_at = self._replaced.get(key, ("", 0.0))
        lagging = replaced_version == body["metadata"]["resourceVersion"]
        if lagging and time.monotonic() - replaced_at < self.settings.resync_seconds:
            # The watch has not shown this pass's own last status write yet: what it shows is known
            # to be old. The job's next event wakes the loop; a resync later, read it instead.
            return self.settings.resync_seconds
        plan, current = self._decide(body, seen.pods, seen.nodes)
        if lagging or rests_on_pods(plan, current):
            fresh = self.kube.get_job(namespace, name)
            if fresh is None or fresh["metadata"].get("deletionTimestamp"):
                return None
            body, pods = fresh, self.kube.job_pods(namespace, name)
            plan, current = self._decide(body, pods, self._confirm_nodes(seen.nodes, pods))
        self._replaced.pop(key, None)
        if plan.acts():
            self._execute(body, plan, JOB_PLURAL)
            if plan.status is not None:
                self._replaced[key] = (body["metadata"]["resourceVersion"], time.monotonic())
                log.info("%s/%s: %s (gang %s)", namespace, name, plan.status.get("phase") or current.phase,
                         plan.status.get("gang"))
                self.metrics.observe_job(parse_time(body["metadata"].get("creationTimestamp")), current,
                                         _patched(current, plan.status))
        self.metrics.set_phase(namespace, name, (plan.status or {}).get("phase") or current.phase)
        self.metrics.set_evaluation(namespace, name, current.metrics)
        return plan.requeue_after

    def _decide(self, body: dict[str, Any], pods: list[dict[str, Any]],
                nodes: NodeTable) -> tuple[Plan, GANTrainingJobStatus]:
        """The plan for one job as observed, and the status it had."""
        metadata = body["metadata"]
        job = JobRef(metadata["name"], metadata["namespace"], metadata["uid"],
                     queue=(metadata.get("labels") or {}).get(naming.KUEUE_QUEUE_LABEL))
        current = GANTrainingJobStatus.model_validate(body.get("status") or {})
        now = datetime.now(UTC)
        try:
            spec = GANTrainingJobSpec.model_validate(body.get("spec") or {})
        except ValidationError as error:
            problems = "; ".join(f"spec.{'.'.join(str(p) for p in item['loc'])}: {item['msg']}"
                                 for item in error.errors())
            return invalid_spec(current, problems, now), current
        service = (self.kube.get_inference_service(job.namespace, spec.rollout.service)
                   if current.phase == "RollingOut" and spec.rollout is not None else None)
        observed = _observed(pods, nodes, now, service)
        return reconcile(job, spec, current, int(metadata.get("generation") or 0), observed, self.settings), current

    def _confirm_nodes(self, nodes: NodeTable, pods: list[dict[str, Any]]) -> NodeTable:
        """The node table completed for pods bound to a node the watch has not shown: read each
        such node once, so a pod on a brand-new node is never taken for one on a lost node."""
        unknown = {pod.get("spec", {}).get("nodeName") for pod in pods} - set(nodes) - {None, ""}
        if not unknown:
            return nodes
        table = dict(nodes)
        for name in unknown:
            node = self.kube.get_node(str(name))
            if node is not None:
                table[str(name)] = not_ready_since(node)
        return table

    def _service_pass(self, namespace: str, name: str) -> float | None:
        body = self.kube.get_inference_service(namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        metadata = body["metadata"]
        service = ServiceRef(name, namespace, metadata["uid"])
        # The CRD schema validated the spec; status tolerates fields a newer operator wrote.
        spec = GANInferenceServiceSpec.model_validate(body.get("spec") or {})
        current = GANInferenceServiceStatus.model_validate(body.get("status") or {})
        job = self.kube.get_job(namespace, spec.source.training_job) if spec.source.training_job else None
        selector = naming.service_selector(name)
        deployments = {d["metadata"]["labels"].get(naming.REVISION_LABEL, ""): d
                       for d in self.kube.deployments(namespace, selector)}
        route = self.kube.get_http_route(namespace, name) if spec.gateway is not None else None
        observed = ServingObserved(resolve_source(spec, namespace, job), deployments,
                                   self.kube.pods(namespace, selector), datetime.now(UTC),
                                   metadata.get("annotations") or {}, route)
        plan = reconcile_service(service, spec, current, int(metadata.get("generation") or 0), observed,
                                 self.settings)
        self._execute(body, plan, SERVICE_PLURAL)
        if plan.status is not None:
            log.info("%s/%s: %s (stable %s)", namespace, name, plan.status.get("phase"),
                     plan.status.get("stableRevision"))
        written = _patched(current, plan.status) if plan.status is not None else current
        self.metrics.observe_service(namespace, name, current, written)
        return plan.requeue_after

    def _execute(self, body: dict[str, Any], plan: Plan, plural: str) -> None:
        """Carry out the plan; a refused write is told to the user (Event, condition) and raised
        as a Rejection, which the caller retries with backoff."""
        metadata = body["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        try:
            self.kube.execute(namespace, name, metadata["resourceVersion"], plan, lambda event: _post(body, event),
                              plural=plural)
        except ApiException as error:
            refused = rejections.rejection(error)
            if refused is None:
                raise
            _post(body, Event("Warning", rejections.REASON, refused.message))
            try:
                self.kube.patch_status(namespace, name, metadata["resourceVersion"],
                                       _rejected_status(body, plural, refused), plural)
            except ApiException as conflict:
                if conflict.status != 409:  # written meanwhile: the next pass says it again
                    raise
            raise refused from error

    def stop_workers(self, namespace: str, name: str, nodes: NodeTable) -> int:
        """Finalizer work: SIGTERM every worker (they write an emergency checkpoint) and report how
        many are still there, so a deleted job never leaves training processes behind."""
        pods = self.kube.job_pods(namespace, name)
        nodes = self._confirm_nodes(nodes, pods)
        observed = _observed(pods, nodes, datetime.now(UTC))
        # As for an old gang: a pod on a lost node is forced, or the job's deletion would wait forever.
        for pod in pods:
            deletion = stop_pod(pod, observed, self.settings)
            if deletion is not None:
                self.kube.delete_pod(namespace, deletion.name, force=deletion.force)
        return len(pods)

    def release_checkpoints(self, namespace: str, name: str, retain: bool) -> None:
        """Finalizer work once the workers are gone: the claim the operator made for the job's
        checkpoints is kept unless spec.checkpoint.retain is false. A claim the user named in
        spec.checkpoint.uri is never the operator's to delete."""
        if not retain:
            self.kube.delete_object(namespace, "PersistentVolumeClaim", naming.checkpoint_claim(name))


def _observed(pods: list[dict[str, Any]], nodes: NodeTable, now: datetime,
              service: dict[str, Any] | None = None) -> Observed:
    """What reconcile sees: the pods, which of their nodes exist, and which are not Ready since when."""
    return Observed(pods, set(nodes), now, service, {node: since for node, since in nodes.items() if since is not None})


def _patched(current: StatusT, patch: dict[str, Any]) -> StatusT:
    """The status after the plan's merge patch of top-level fields (the ones metrics read)."""
    return type(current).model_validate({**current.to_wire(), **patch})


def _rejected_status(body: dict[str, Any], plural: str, refused: rejections.Rejection) -> dict[str, Any]:
    """The status with a condition that says which write was refused, and the apiserver's words."""
    now = rfc3339(datetime.now(UTC))
    message = f"the apiserver refused a write ({refused.status}): {refused.message}"[-1024:]
    if plural == JOB_PLURAL:
        job = GANTrainingJobStatus.model_validate(body.get("status") or {})
        job.conditions = upsert_condition(job.conditions, Condition(
            type="Created", status="False", reason=rejections.REASON, message=message, last_transition_time=now))
        return job.to_wire()
    service = GANInferenceServiceStatus.model_validate(body.get("status") or {})
    service.conditions = upsert_condition(service.conditions, ServiceCondition(
        type="Degraded", status="True", reason=rejections.REASON, message=message, last_transition_time=now,
        observed_generation=body["metadata"].get("generation")))
    return service.to_wire()


def _post(body: dict[str, Any], event: Event) -> None:
    kopf.event(body, type=event.type, reason=event.reason, message=event.message[:1024])
