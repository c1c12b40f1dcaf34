"""The rollout of a new revision against the stable one: steps, analyses, verdicts, decisions.

Pure, like the rest of the operator's decisions. One pass looks at the rollout recorded in the
service's status and at the analysis pods, and moves the rollout on by at most one transition; an
operator restarted mid-rollout therefore resumes where the status says it was.

Semantics follow Argo Rollouts' analysis: a failed analysis aborts (after `failureLimit` re-runs),
an inconclusive one pauses for a person (after `inconclusiveLimit` re-runs), only a pass moves to
the next step. A person decides with annotations naming the revision: ganforge.io/promote
(promotes from any phase), ganforge.io/abort (rolls back).

Traffic: with `spec.gateway` and the canary strategy, each step first routes its weight of the
service's HTTPRoute to the canary (ganforge.operator.traffic), and its analysis starts only once
the Gateway has accepted that route. Without a Gateway (or with blueGreen) the canary takes no
user traffic before promotion: it is analysed on its own revision Service, at weight 0, and the
stable Service (and the route, if any) switches in one write.

With manual approval the checks go on while the rollout waits for a person: the last step is
analysed again every `approvalRecheckSeconds`, and a failure there rolls back as anywhere else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError

from ganforge.api.analysis import AnalysisResult
from ganforge.api.inference_service import (
    ABORT_ANNOTATION,
    MAX_ANALYSES_IN_STATUS,
    PROMOTE_ANNOTATION,
    AnalysisRecord,
    AnalysisState,
    GANInferenceServiceSpec,
    RevisionStatus,
    RolloutStatus,
)
from ganforge.operator import naming, serving_children
from ganforge.operator.observe import terminated_state
from ganforge.operator.reconcile import DeletePod, Event, Plan, rfc3339
from ganforge.operator.settings import OperatorSettings
from ganforge.operator.traffic import RouteState

ANALYSIS_RECHECK_SECONDS = 2.0

# Event reasons
ROLLOUT_STARTED, ANALYSIS_STARTED = "RolloutStarted", "AnalysisStarted"
ROLLOUT_PAUSED, AWAITING_APPROVAL, ROLLED_BACK = "RolloutPaused", "AwaitingApproval", "RolledBack"
ANALYSIS_EVENT = {"Pass": "AnalysisPassed", "Fail": "AnalysisFailed", "Inconclusive": "AnalysisInconclusive"}


@dataclass
class RolloutDecision:
    action: Literal["wait", "promote", "rollback"] = "wait"
    reason: str = ""  # for people: why it waits, or why it was promoted or rolled back
    waiting_reason: str = "RolloutProgressing"  # the Progressing condition's reason while it waits


@dataclass(frozen=True)
class RolloutObserved:
    pods: Sequence[Mapping[str, Any]]  # the service's pods (analysis pods among them)
    annotations: Mapping[str, str]
    now: datetime
    route: RouteState | None = None  # the service's HTTPRoute as the Gateway took it up; None = none


@dataclass
class _Context:
    service: serving_children.ServiceRef
    spec: GANInferenceServiceSpec
    model_name: str
    canary: RevisionStatus
    stable: str
    observed: RolloutObserved
    settings: OperatorSettings
    plan: Plan
    pods: dict[str, Mapping[str, Any]] = field(default_factory=dict)


def step_weights(spec: GANInferenceServiceSpec) -> list[int]:
    """The canary's share of user traffic during each analysis. Without a route (no Gateway, or
    blueGreen) the canary is analysed on its own Service: one analysis, no user traffic, then the
    switch."""
    if spec.gateway is not None and spec.rollout.strategy == "canary":
        return list(spec.rollout.steps)
    return [0]


def advance(service: serving_children.ServiceRef, spec: GANInferenceServiceSpec, model_name: str,
            current: RolloutStatus | None, canary: RevisionStatus, stable: str, observed: RolloutObserved,
            settings: OperatorSettings, plan: Plan) -> tuple[RolloutStatus, RolloutDecision]:
    """One pass of the rollout of `canary` (Ready, not stable) against `stable`."""
    context = _Context(service, spec, model_name, canary, stable, observed, settings, plan,
                       {pod["metadata"]["name"]: pod for pod in observed.pods})
    now = rfc3339(observed.now)
    rollout = current
    if rollout is None or rollout.revision != canary.name or rollout.phase in ("Promoted", "RolledBack"):
        rollout = RolloutStatus(revision=canary.name, from_revision=stable, strategy=spec.rollout.strategy,
                                phase="Progressing", weights=step_weights(spec), started_time=now,
                                message=_traffic_note(service, spec))
        plan.events.append(Event("Normal", ROLLOUT_STARTED, f"revision {canary.name} against stable {stable}: "
                                                            f"{len(rollout.weights)} analysis step(s)"))
    else:
        rollout = rollout.model_copy(deep=True)
    decision = _decide_by_person(rollout, observed.annotations)
    if decision is None:
        decision = _advance_analyses(rollout, context)
    if decision.action != "wait":
        rollout.phase = "Promoted" if decision.action == "promote" else "RolledBack"
        rollout.message, rollout.finished_time = decision.reason, now
        # The records keep every verdict; the pods (and their logs) go with the rollout.
        plan.delete += [DeletePod(a.pod) for a in rollout.analyses if a.pod in context.pods]
    return rollout, decision


def abandon(rollout: RolloutStatus, why: str, now: datetime, plan: Plan) -> RolloutStatus:
    """End a rollout whose canary revision failed on its own; its analysis pods go too."""
    ended = rollout.model_copy(deep=True)
    ended.phase, ended.message, ended.finished_time = "RolledBack", why, rfc3339(now)
    plan.delete += [DeletePod(a.pod) for a in ended.analyses if a.state == "Running"]
    plan.events.append(Event("Warning", ROLLED_BACK, f"revision {rollout.revision}: {why}"))
    return ended


def _traffic_note(service: serving_children.ServiceRef, spec: GANInferenceServiceSpec) -> str:
    if spec.gateway is not None and spec.rollout.strategy == "canary":
        steps = ", ".join(f"{weight}%" for weight in spec.rollout.steps)
        return f"canary through HTTPRoute {service.name}: {steps} of the traffic, each step analysed"
    switch = "the route and the stable Service switch" if spec.gateway is not None else "the stable Service switches"
    note = f"the canary is analysed on its own Service, then {switch}"
    if spec.rollout.strategy == "blueGreen":
        return f"blueGreen: {note}"
    return f"strategy canary without spec.gateway: {note} (steps carry no weight)"


def _decide_by_person(rollout: RolloutStatus, annotations: Mapping[str, str]) -> RolloutDecision | None:
    if annotations.get(ABORT_ANNOTATION) == rollout.revision:
        return RolloutDecision("rollback", f"aborted by a person ({ABORT_ANNOTATION}={rollout.revision})")
    if annotations.get(PROMOTE_ANNOTATION) == rollout.revision:
        return RolloutDecision("promote", f"promoted by a person ({PROMOTE_ANNOTATION}={rollout.revision})")
    return None


def _advance_analyses(rollout: RolloutStatus, context: _Context) -> RolloutDecision:
    if rollout.phase == "Paused":
        return RolloutDecision(reason=rollout.message, waiting_reason=ROLLOUT_PAUSED)
    if rollout.phase == "AwaitingApproval":
        return _keep_checking(rollout, context)
    running = next((a for a in rollout.analyses if a.state == "Running"), None)
    if running is None:
        unrouted = _route_pending(rollout, context)
        if unrouted:
            return RolloutDecision(reason=unrouted)
        _start_analysis(rollout, context, _attempts(rollout))
        return RolloutDecision(reason=f"step {rollout.step + 1}/{len(rollout.weights)}: analysing")
    result = _finished_analysis(running, context)
    if result is None:
        pod_spec = _analysis_pod(rollout, context, running.attempt)
        if running.pod not in context.pods:
            context.plan.create.append(pod_spec)  # lost, or not yet in the cache: AlreadyExists is success
        return RolloutDecision(reason=f"step {rollout.step + 1}/{len(rollout.weights)}: analysing ({running.pod})")
    _record(running, result, context)
    policy = context.spec.rollout
    if running.state == "Pass":
        if rollout.step + 1 < len(rollout.weights):
            rollout.step += 1  # the route takes the next weight in this pass; its analysis follows
            return RolloutDecision(reason=f"step {rollout.step + 1}/{len(rollout.weights)}: routing "
                                          f"{rollout.weights[rollout.step]}% of the traffic to the canary")
        if policy.approval == "manual":
            rollout.phase = "AwaitingApproval"
            rollout.message = (f"every analysis passed; waiting for {PROMOTE_ANNOTATION}={rollout.revision} "
                               f"(or {ABORT_ANNOTATION})")
            context.plan.events.append(Event("Normal", AWAITING_APPROVAL, rollout.message))
            return RolloutDecision(reason=rollout.message, waiting_reason=AWAITING_APPROVAL)
        return RolloutDecision("promote", f"every analysis passed ({running.message})")
    beyond = _beyond_limits(rollout, running, context)
    if beyond is not None:
        return beyond
    _start_analysis(rollout, context, running.attempt + 1)  # a tolerated failure or inconclusive: again
    return RolloutDecision(reason=f"step {rollout.step + 1}/{len(rollout.weights)}: analysing again "
                                  f"after {running.state.lower()}")


def _beyond_limits(rollout: RolloutStatus, running: AnalysisRecord, context: _Context,
                   when: str = "") -> RolloutDecision | None:
    """Count a Fail or Inconclusive verdict; past failureLimit it rolls back, past
    inconclusiveLimit it pauses for a person; within the limits, None."""
    policy = context.spec.rollout
    if running.state == "Fail":
        rollout.failures += 1
        if rollout.failures > policy.failure_limit:
            return RolloutDecision("rollback", f"analysis failed{when}: {running.message}")
        return None
    rollout.inconclusives += 1
    if rollout.inconclusives <= policy.inconclusive_limit:
        return None
    rollout.phase = "Paused"
    rollout.message = (f"analysis inconclusive{when}: {running.message}; a person decides: "
                       f"{PROMOTE_ANNOTATION}={rollout.revision} or {ABORT_ANNOTATION}={rollout.revision}")
    context.plan.events.append(Event("Warning", ROLLOUT_PAUSED, rollout.message))
    return RolloutDecision(reason=rollout.message, waiting_reason=ROLLOUT_PAUSED)


def _attempts(rollout: RolloutStatus) -> int:
    return sum(1 for a in rollout.analyses if a.step == rollout.step)


def _route_pending(rollout: RolloutStatus, context: _Context) -> str:
    """Why the step's analysis cannot start yet: the Gateway does not route its weight yet."""
    weight = rollout.weights[rollout.step]
    if weight == 0:
        return ""
    route = context.observed.route
    where = f"step {rollout.step + 1}/{len(rollout.weights)}: waiting for the Gateway to route {weight}% to the canary"
    if route is None:
        return f"{where} (HTTPRoute {context.service.name} not found yet)"
    if route.weights.get(context.canary.name) != weight or not route.accepted:
        return f"{where} ({route.message})"
    return ""


def _keep_checking(rollout: RolloutStatus, context: _Context) -> RolloutDecision:
    """While a person decides, the last step is analysed again now and then; a failure rolls back
    (within failureLimit it is run again), an inconclusive result pauses, as anywhere else."""
    waiting = RolloutDecision(reason=rollout.message, waiting_reason=AWAITING_APPROVAL)
    running = next((a for a in rollout.analyses if a.state == "Running"), None)
    if running is None:
        last = rollout.analyses[-1].finished_time if rollout.analyses else None
        due = last is None or context.observed.now - datetime.fromisoformat(last) >= timedelta(
            seconds=context.settings.approval_recheck_seconds)
        if due:
            _start_analysis(rollout, context, _attempts(rollout))
        return waiting
    result = _finished_analysis(running, context)
    if result is None:
        if running.pod not in context.pods:
            context.plan.create.append(_analysis_pod(rollout, context, running.attempt))
        return waiting
    _record(running, result, context)
    if running.state != "Pass":
        return _beyond_limits(rollout, running, context, " while awaiting approval") or waiting
    return waiting


def _analysis_pod(rollout: RolloutStatus, context: _Context, attempt: int) -> dict[str, Any]:
    return serving_children.analysis_pod(context.service, context.spec, context.model_name, context.canary,
                                         context.stable, rollout.step, attempt, context.settings)


def _start_analysis(rollout: RolloutStatus, context: _Context, attempt: int) -> None:
    pod = _analysis_pod(rollout, context, attempt)
    context.plan.create.append(pod)
    record = AnalysisRecord(step=rollout.step, attempt=attempt, weight=rollout.weights[rollout.step],
                            pod=pod["metadata"]["name"], state="Running", started_time=rfc3339(context.observed.now))
    rollout.analyses.append(record)
    # Old records go first; the running one is the newest.
    del rollout.analyses[:-MAX_ANALYSES_IN_STATUS]
    context.plan.events.append(Event("Normal", ANALYSIS_STARTED, f"{record.pod}: step {rollout.step + 1}/"
                                                                 f"{len(rollout.weights)}, attempt {attempt + 1}"))


def _finished_analysis(record: AnalysisRecord, context: _Context) -> AnalysisResult | None:
    """The analysis pod's result once it has terminated; a pod that died without one (or that
    vanished) is inconclusive: an analysis that did not happen never promotes."""
    pod = context.pods.get(record.pod)
    if pod is None:
        return None
    terminated = terminated_state(pod, naming.ANALYSIS_CONTAINER)
    phase = pod.get("status", {}).get("phase")
    if terminated is None and phase not in ("Succeeded", "Failed"):
        return None
    code = int((terminated or {}).get("exitCode", -1))
    message = str((terminated or {}).get("message") or "").strip()
    if code == 0:
        try:
            return AnalysisResult.model_validate_json(message)
        except ValidationError as error:
            return AnalysisResult(verdict="Inconclusive", message=f"unreadable analysis result: {error}"[:512])
    return AnalysisResult(verdict="Inconclusive",
                          message=f"the analysis pod exited {code} without a result: {message}"[-512:])


def _record(record: AnalysisRecord, result: AnalysisResult, context: _Context) -> None:
    state: AnalysisState = result.verdict
    record.state, record.measurements = state, result.measurements
    record.feature_extractor, record.sample_size = result.feature_extractor, result.sample_size
    record.message, record.finished_time = result.message, rfc3339(context.observed.now)
    kind: Literal["Normal", "Warning"] = "Normal" if state == "Pass" else "Warning"
    context.plan.events.append(Event(kind, ANALYSIS_EVENT[state], f"{record.pod}: {state}: {result.message}"))
