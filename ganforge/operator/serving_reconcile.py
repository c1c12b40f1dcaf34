"""The operator's decisions for a GANInferenceService: (spec, status, source, observed) -> a Plan.

Pure and unit-tested, like the job's reconcile. The rules that keep clients of the stable endpoint
safe:
- every revision is its own Triton Deployment and Service; a model that carries traffic is never
  reloaded or unloaded;
- a revision gets traffic only once all of its pods report the model ready, and the stable
  Service's selector moves to it in one write; until then the previous stable keeps serving;
- a revision that cannot load (its sha256 or files do not verify, Triton never reports it ready)
  is Failed and removed, the stable revision keeps serving, and the service says Degraded why;
- a source that is missing, failed or not exported yet changes nothing that serves.

- a ready revision becomes stable at once only when there is no stable yet; otherwise it is rolled
  out against the stable one, analysis by analysis (ganforge.operator.rollout), and promoted or
  rolled back on the verdicts;
- with spec.gateway, the service's HTTPRoute gives the canary its step's weight only while the
  canary is Ready; a revision that loses its weight (the old stable at promotion, a canary rolled
  back) keeps its pods for spec.gateway.drainSeconds before it is removed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from ganforge.api.inference_service import (
    TRITON_HTTP_PORT,
    GANInferenceServiceSpec,
    GANInferenceServiceStatus,
    RevisionStatus,
    ServiceCondition,
    ServiceConditionType,
    revision_name,
)
from ganforge.operator import naming, serving_children, traffic
from ganforge.operator import rollout as rollout_steps
from ganforge.operator.observe import unscheduled
from ganforge.operator.reconcile import CONDITION_MESSAGE_LIMIT, DeleteObject, Event, Plan, rfc3339, upsert_condition
from ganforge.operator.settings import OperatorSettings

# Revisions kept in status (newest last); older Retired/Failed ones are dropped from the list.
MAX_REVISIONS_IN_STATUS = 10
LOADING_RECHECK_SECONDS = 2.0

# Event reasons
REVISION_CREATED, REVISION_READY, PROMOTED = "RevisionCreated", "RevisionReady", "Promoted"
REVISION_FAILED, SOURCE_PROBLEM = "RevisionFailed", "SourceNotReady"


@dataclass(frozen=True)
class SourceArtifact:
    uri: str
    sha256: str
    description: str  # for people: where it came from


@dataclass(frozen=True)
class SourceState:
    """What the service's source offers now: an artifact to serve, or why there is none."""

    artifact: SourceArtifact | None = None
    waiting: str = ""  # not a problem yet: the job is still training or exporting
    problem_reason: str = ""  # a problem the user must fix
    problem: str = ""


def resolve_source(spec: GANInferenceServiceSpec, namespace: str, job: Mapping[str, Any] | None) -> SourceState:
    """The artifact named by spec.source, reading the referenced job (None when it does not exist)."""
    if spec.source.artifact is not None:
        pinned = spec.source.artifact
        return SourceState(SourceArtifact(pinned.uri, pinned.sha256, f"artifact {pinned.uri}"))
    name = spec.source.training_job
    if job is None:
        return SourceState(problem_reason="SourceNotFound", problem=f"GANTrainingJob {name} not found in "
                                                                    f"namespace {namespace} (spec.source.trainingJob)")
    status = job.get("status") or {}
    phase = status.get("phase", "Pending")
    artifact = status.get("artifact")
    if artifact:
        kimg = artifact.get("kimg")
        where = f"GANTrainingJob {name}" + (f" at {kimg:g} kimg" if isinstance(kimg, int | float) else "")
        return SourceState(SourceArtifact(artifact["uri"], artifact["sha256"], where))
    if phase == "Failed":
        failed: Mapping[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Failed"), {})
        return SourceState(problem_reason="SourceFailed",
                           problem=f"GANTrainingJob {name} failed ({failed.get('reason', 'Failed')}): "
                                   f"{failed.get('message', '')}".strip())
    if phase == "Succeeded":
        return SourceState(problem_reason="SourceNotExported",
                           problem=f"GANTrainingJob {name} succeeded without an export (spec.export.enabled is false)")
    progress = (status.get("progress") or {}).get("kimg")
    return SourceState(waiting=f"waiting for GANTrainingJob {name} to train and export (phase {phase}"
                               + (f", {progress:g} kimg)" if isinstance(progress, int | float) else ")"))


@dataclass(frozen=True)
class ServingObserved:
    source: SourceState
    deployments: Mapping[str, Mapping[str, Any]]  # revision -> its Deployment
    pods: Sequence[Mapping[str, Any]]  # the service's pods: Triton pods by revision, analysis pods
    now: datetime
    annotations: Mapping[str, str] = field(default_factory=dict)  # the service's: a person's rollout decisions
    route: Mapping[str, Any] | None = None  # the service's HTTPRoute (with spec.gateway), None = none


@dataclass
class _Health:
    ready_replicas: int = 0
    replicas: int = 0
    failure: str = ""  # why the revision cannot serve; "" = none seen
    unscheduled: str = ""  # why a pod of it waits for a node (a missing claim, no room), as the scheduler says


def _revision_health(revision: str, observed: ServingObserved, stable: bool) -> _Health:
    deployment = observed.deployments.get(revision)
    if deployment is None:
        return _Health()
    status = deployment.get("status") or {}
    health = _Health(int(status.get("readyReplicas") or 0), int(status.get("replicas") or 0))
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            health.failure = f"not ready within the progress deadline: {condition.get('message', '')}"
    for pod in observed.pods:
        if pod["metadata"].get("labels", {}).get(naming.REVISION_LABEL) != revision:
            continue
        # Waiting is not failing (the claim or the room may yet come, as under GitOps ordering);
        # the scheduler's reason goes into the revision's message for `kubectl describe`.
        if (condition := unscheduled(pod.get("status", {}))) is not None:
            health.unscheduled = str(condition.get("message") or condition.get("reason") or "Unschedulable")
        # The init step fails only when the revision does not verify; retrying cannot fix that.
        for terminated in _exits(pod, "initContainerStatuses"):
            health.failure = (terminated.get("message") or f"init step exited {terminated['exitCode']}").strip()
        # A new revision whose Triton crashed once (even if restarted since) is not trusted with
        # traffic; the stable one is never taken down, and only a crash it is in now is reported.
        for terminated in _exits(pod, "containerStatuses", naming.TRITON_CONTAINER, now_only=stable):
            why = terminated.get("reason") or terminated.get("message") or ""
            health.failure = health.failure or f"tritonserver exited {terminated['exitCode']}: {why}".strip()
    return health


def _exits(pod: Mapping[str, Any], statuses: str, container: str | None = None,
           now_only: bool = False) -> list[Mapping[str, Any]]:
    """Non-zero `terminated` records of a pod's containers, now (state) or before a restart (lastState)."""
    found = []
    for entry in pod.get("status", {}).get(statuses) or []:
        if container is not None and entry.get("name") != container:
            continue
        for key in ("state",) if now_only else ("state", "lastState"):
            terminated = (entry.get(key) or {}).get("terminated")
            if terminated and int(terminated.get("exitCode", 0)) != 0:
                found.append(terminated)
    return found


def _condition(type_: ServiceConditionType, status: bool, reason: str, message: str, generation: int,
               now: datetime) -> ServiceCondition:
    value: Literal["True", "False"] = "True" if status else "False"
    return ServiceCondition(type=type_, status=value, reason=reason, message=message[-CONDITION_MESSAGE_LIMIT:],
                            last_transition_time=rfc3339(now), observed_generation=generation)


@dataclass
class _Verdict:
    degraded_reason: str = ""
    degraded: list[str] = field(default_factory=list)
    progressing: str = ""
    progressing_reason: str = "RevisionLoading"


def reconcile_service(service: serving_children.ServiceRef, spec: GANInferenceServiceSpec,
                      current: GANInferenceServiceStatus, generation: int, observed: ServingObserved,
                      settings: OperatorSettings) -> Plan:
    status = current.model_copy(deep=True)
    status.observed_generation = generation
    status.model_name = spec.model_name or service.name
    status.endpoint = f"http://{service.name}.{service.namespace}.svc:{TRITON_HTTP_PORT}"
    plan = Plan()
    verdict = _Verdict()
    now = observed.now
    source = observed.source
    desired = revision_name(source.artifact.sha256) if source.artifact else None
    if source.problem:
        verdict.degraded_reason = source.problem_reason
        verdict.degraded.append(source.problem)
        plan.events.append(Event("Warning", SOURCE_PROBLEM, source.problem))
    elif source.waiting and status.stable_revision is None:
        verdict.progressing = source.waiting

    route = traffic.read_route(service, observed.route) if spec.gateway is not None else None
    known = {revision.name: revision for revision in status.revisions}
    if source.artifact is not None and desired is not None and desired not in known:
        entry = RevisionStatus(name=desired, uri=source.artifact.uri, sha256=source.artifact.sha256,
                               source=source.artifact.description, state="Loading", created_time=rfc3339(now))
        status.revisions.append(entry)
        known[desired] = entry
        plan.events.append(Event("Normal", REVISION_CREATED, f"revision {desired} from {entry.source}"))
    elif desired is not None and known[desired].state == "Retired" and desired != status.stable_revision:
        # Pointed back at a revision that once served (going back to an earlier model): it is
        # loaded again and rolled out like a new one. A Failed one stays failed.
        known[desired].state, known[desired].message = "Loading", "requested again"
        plan.events.append(Event("Normal", REVISION_CREATED, f"revision {desired} requested again"))

    for revision in status.revisions:
        serving = revision.name in (desired, status.stable_revision) and revision.state in ("Loading", "Ready")
        name = naming.revision_object(service.name, revision.name)
        if not serving:
            if revision.state in ("Loading", "Ready"):
                revision.state, revision.message = "Retired", "replaced by a newer revision"
            if _draining(revision, now):
                continue  # no new requests reach it; those in flight finish
            revision.drain_until = None
            if revision.name in observed.deployments:
                plan.delete_objects += [DeleteObject("Deployment", name), DeleteObject("Service", name)]
            continue
        plan.apply.append(serving_children.triton_deployment(service, spec, status.model_name, revision.name,
                                                             revision.uri, revision.sha256, settings))
        plan.apply.append(serving_children.revision_service(service, revision.name))
        health = _revision_health(revision.name, observed, revision.name == status.stable_revision)
        revision.replicas, revision.ready_replicas = health.replicas, health.ready_replicas
        if health.failure and revision.name == status.stable_revision:
            # The stable revision is never taken down by the operator; its pods restart on their own.
            revision.message = health.failure
            verdict.degraded_reason = verdict.degraded_reason or "StableUnhealthy"
            verdict.degraded.append(f"stable revision {revision.name}: {health.failure}")
        elif health.failure:
            revision.state, revision.message = "Failed", health.failure
            plan.delete_objects += [DeleteObject("Deployment", name), DeleteObject("Service", name)]
            plan.events.append(Event("Warning", REVISION_FAILED, f"revision {revision.name}: {health.failure}"))
        else:
            revision.message = f"{health.ready_replicas}/{spec.triton.replicas} pods ready"
            if health.unscheduled:
                revision.message += f"; not scheduled: {health.unscheduled}"
            if health.ready_replicas >= spec.triton.replicas:
                if revision.state == "Loading":
                    plan.events.append(Event("Normal", REVISION_READY, f"revision {revision.name}: "
                                                                       f"{health.ready_replicas} pod(s) ready"))
                revision.state = "Ready"
            elif revision.name != status.stable_revision:
                # A stable revision short of pods stays Ready: it still serves, and it keeps its traffic.
                revision.state = "Loading"

    wanted = known.get(desired) if desired else None
    if wanted is not None and wanted.state == "Failed" and wanted.name != status.stable_revision:
        rollout = status.rollout
        if rollout is not None and rollout.revision == wanted.name and rollout.phase not in ("Promoted", "RolledBack"):
            # The canary broke mid-rollout (its Triton died, its pods never came back): that ends it.
            status.rollout = rollout_steps.abandon(rollout, f"the canary revision failed: {wanted.message}",
                                                   observed.now, plan)
            status.canary_revision = None
        rolled_back = rollout is not None and rollout.revision == wanted.name
        verdict.degraded_reason = verdict.degraded_reason or (rollout_steps.ROLLED_BACK if rolled_back
                                                              else REVISION_FAILED)
        verdict.degraded.append(f"revision {wanted.name} cannot serve: {wanted.message}")
    elif wanted is not None and wanted.state == "Loading":
        verdict.progressing = f"revision {wanted.name} is loading ({wanted.message})"
    elif wanted is not None and wanted.state == "Ready" and wanted.name != status.stable_revision:
        if status.stable_revision is None:
            _promote(service, status, wanted, plan)  # the first revision: nothing to compare it with
        else:
            _roll_out(service, spec, status, wanted, observed, route, settings, plan, verdict)
    # Applied on every pass: the selector is the one switch that moves traffic. Before any revision
    # is stable it selects the first one, whose pods become endpoints only once their model is ready;
    # the Service exists early so that the proxies know it before it first answers.
    first = status.stable_revision or (wanted.name if wanted is not None and wanted.state == "Loading" else None)
    if first is not None:
        plan.apply.append(serving_children.stable_service(service, first))
    _route_traffic(service, spec, status, route, plan)

    # Old Retired and Failed records go first; the stable and the wanted revision always stay.
    keep = {status.stable_revision, desired}
    while len(status.revisions) > MAX_REVISIONS_IN_STATUS:
        oldest = next((r for r in status.revisions if r.name not in keep), None)
        if oldest is None:
            break
        status.revisions.remove(oldest)
    _set_conditions(status, verdict, generation, now)
    if status != current:
        plan.status = status.to_wire()
    plan.requeue_after = LOADING_RECHECK_SECONDS if verdict.progressing else settings.resync_seconds
    for revision in status.revisions:
        if _draining(revision, now):
            assert revision.drain_until is not None
            left = (datetime.fromisoformat(revision.drain_until) - now).total_seconds()
            plan.requeue_after = min(plan.requeue_after, max(left, 0.5))
    return plan


def _draining(revision: RevisionStatus, now: datetime) -> bool:
    return revision.drain_until is not None and now < datetime.fromisoformat(revision.drain_until)


def _drain_until(spec: GANInferenceServiceSpec, now: datetime) -> str | None:
    """A revision that had weight on the route keeps its pods a while; without a route no user
    request can be in flight on a canary, and the old stable's pods drain on their own (preStop)."""
    if spec.gateway is None:
        return None
    return rfc3339(now + timedelta(seconds=spec.gateway.drain_seconds))


def _route_traffic(service: serving_children.ServiceRef, spec: GANInferenceServiceSpec,
                   status: GANInferenceServiceStatus, route: traffic.RouteState | None, plan: Plan) -> None:
    """The HTTPRoute: the stable revision, the canary at its step's weight while it is Ready, and
    draining revisions at weight 0 until they are removed."""
    status.canary_weight = 0
    if spec.gateway is None or status.stable_revision is None or status.model_name is None:
        status.route = None
        return
    rollout = status.rollout
    canary = next((r for r in status.revisions if r.name == status.canary_revision), None)
    if canary is not None and canary.state == "Ready" and rollout is not None and rollout.revision == canary.name \
            and rollout.phase not in ("Promoted", "RolledBack"):
        status.canary_weight = rollout.weights[rollout.step]
    backends = [traffic.Backend(status.stable_revision, 100 - status.canary_weight)]
    if canary is not None and canary.state in ("Loading", "Ready"):
        backends.append(traffic.Backend(canary.name, status.canary_weight))
    backends += [traffic.Backend(r.name, 0) for r in status.revisions
                 if r.drain_until is not None and r.name not in (status.stable_revision, status.canary_revision)]
    plan.apply.append(traffic.http_route(service, spec.gateway, status.model_name, backends))
    status.route = route.message if route is not None else f"HTTPRoute {service.name}: created"


def _roll_out(service: serving_children.ServiceRef, spec: GANInferenceServiceSpec, status: GANInferenceServiceStatus,
              canary: RevisionStatus, observed: ServingObserved, route: traffic.RouteState | None,
              settings: OperatorSettings, plan: Plan, verdict: _Verdict) -> None:
    assert status.stable_revision is not None and status.model_name is not None
    status.canary_revision = canary.name
    rollout, decision = rollout_steps.advance(
        service, spec, status.model_name, status.rollout, canary, status.stable_revision,
        rollout_steps.RolloutObserved(observed.pods, observed.annotations, observed.now, route), settings, plan)
    status.rollout = rollout
    drain_until = _drain_until(spec, observed.now)
    if decision.action == "promote":
        _promote(service, status, canary, plan, decision.reason, drain_until)
    elif decision.action == "rollback":
        _roll_back(service, status, canary, plan, decision.reason, drain_until)
        verdict.degraded_reason = rollout_steps.ROLLED_BACK
        verdict.degraded.append(f"revision {canary.name} rolled back: {decision.reason}")
    else:
        verdict.progressing, verdict.progressing_reason = decision.reason, decision.waiting_reason


def _promote(service: serving_children.ServiceRef, status: GANInferenceServiceStatus, revision: RevisionStatus,
             plan: Plan, why: str = "", drain_until: str | None = None) -> None:
    """The stable Service (and the route) switch to `revision` in one write; the old stable's pods
    finish their in-flight requests (the route's drain, the preStop delay, then Triton's exit
    timeout) before their Deployment goes."""
    previous = status.stable_revision
    status.stable_revision, status.canary_revision, status.canary_weight = revision.name, None, 0
    for record in status.revisions:
        if record.name == previous:
            record.state, record.message = "Retired", f"replaced by {revision.name}"
            record.drain_until = drain_until
            if drain_until is None:
                name = naming.revision_object(service.name, previous)
                plan.delete_objects += [DeleteObject("Deployment", name), DeleteObject("Service", name)]
    was = f" (was {previous})" if previous else ""
    plan.events.append(Event("Normal", PROMOTED, f"revision {revision.name} is stable{was}"
                                                 + (f": {why}" if why else "")))


def _roll_back(service: serving_children.ServiceRef, status: GANInferenceServiceStatus, revision: RevisionStatus,
               plan: Plan, why: str, drain_until: str | None = None) -> None:
    """The canary's weight goes to 0 at once; without a route it never had user traffic and goes
    at once, with one it drains first. The stable stays as it was."""
    had_traffic = status.canary_weight > 0
    status.canary_revision, status.canary_weight = None, 0
    revision.state, revision.message = "Failed", f"rolled back: {why}"
    if had_traffic and drain_until is not None:
        revision.drain_until = drain_until
    else:
        name = naming.revision_object(service.name, revision.name)
        plan.delete_objects += [DeleteObject("Deployment", name), DeleteObject("Service", name)]
    plan.events.append(Event("Warning", rollout_steps.ROLLED_BACK, f"revision {revision.name}: {why}"))


def _set_conditions(status: GANInferenceServiceStatus, verdict: _Verdict, generation: int, now: datetime) -> None:
    stable = next((r for r in status.revisions if r.name == status.stable_revision), None)
    serving = stable is not None and stable.ready_replicas > 0
    ready = _condition("Ready", serving, "StableServing" if serving else "NoStableRevision",
                       f"revision {stable.name}: {stable.message}" if stable else "no revision serves yet",
                       generation, now)
    progressing = _condition("Progressing", bool(verdict.progressing),
                             verdict.progressing_reason if verdict.progressing else "Settled", verdict.progressing,
                             generation, now)
    degraded = _condition("Degraded", bool(verdict.degraded), verdict.degraded_reason or "AsExpected",
                          "; ".join(verdict.degraded), generation, now)
    for condition in (ready, progressing, degraded):
        status.conditions = upsert_condition(status.conditions, condition)
    if verdict.degraded:
        status.phase = "Degraded"
    elif verdict.progressing:
        status.phase = "Progressing"
    elif serving:
        status.phase = "Ready"
    else:
        status.phase = "Pending"
