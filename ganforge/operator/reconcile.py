"""The operator's decisions: (job, observed pods, now) -> a Plan. Pure and unit-tested.

One reconcile makes at most one state transition, and writes it to status *before* acting on it
where the action would destroy evidence: a restart first records `gang += 1` (with the reason and
counters), and only the next pass deletes the old gang's pods because they are no longer current.
An operator killed between the two finds status already saying what to do, so nothing is counted
twice and nothing is left half-done.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

from ganforge.api.exit_codes import ExitCode
from ganforge.api.inference_service import ServiceCondition
from ganforge.api.training_job import (
    ArtifactStatus,
    Condition,
    ConditionType,
    FailureStatus,
    GANTrainingJobSpec,
    GANTrainingJobStatus,
    WorkersStatus,
)
from ganforge.operator import children, job_rollout, naming, serving_children
from ganforge.operator.observe import (
    Worker,
    WorkerState,
    classify,
    controlled_by,
    fenced,
    node_gone,
    parse_time,
    rejected_at_admission,
    terminated_state,
)
from ganforge.operator.settings import OperatorSettings

TERMINAL_PHASES = ("Succeeded", "Failed")

# Event reasons; the operator's metrics count restarts and failures by them.
GANG_CREATED, RUNNING, SUCCEEDED = "GangCreated", "Running", "Succeeded"
PREEMPTED, WORKER_FAILED, FAILED, INVALID_SPEC = "Preempted", "WorkerFailed", "Failed", "InvalidSpec"
SUSPENDED, RESUMED, DEADLINE_EXCEEDED = "Suspended", "Resumed", "DeadlineExceeded"
GANG_NOT_RUNNING = "GangNotRunning"
TRAINING_FINISHED, EXPORT_STARTED, EXPORTED, EXPORT_FAILED = (
    "TrainingFinished", "ExportStarted", "Exported", "ExportFailed")
ROLLING_OUT, ROLLED_OUT, ROLLED_BACK = "RollingOut", "RolledOut", "RolledBack"
CONDITION_MESSAGE_LIMIT = 1024


@dataclass(frozen=True)
class DeletePod:
    name: str
    force: bool = False  # grace period 0: the node is gone and nobody will confirm termination


@dataclass(frozen=True)
class DeleteObject:
    kind: str  # Deployment or Service
    name: str


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class Plan:
    create: list[dict[str, Any]] = field(default_factory=list)  # AlreadyExists is success
    apply: list[dict[str, Any]] = field(default_factory=list)  # create or replace
    status: dict[str, Any] | None = None  # merge patch of the operator-owned status fields
    delete: list[DeletePod] = field(default_factory=list)
    delete_objects: list[DeleteObject] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None

    def acts(self) -> bool:
        """Whether carrying the plan out writes anything; a plan that does not costs no request."""
        return bool(self.create or self.apply or self.status is not None or self.delete or self.delete_objects
                    or self.events)


# Status fields (wire names) that count what happened to pods: a gang restarted, a failure or a
# disruption counted, an export pod (re)started.
COUNTERS = {"gang": "gang", "failures": "failures", "preemptions": "preemptions", "exportAttempts": "export_attempts"}


def rests_on_pods(plan: Plan, current: GANTrainingJobStatus) -> bool:
    """Whether a plan decided on what the watches showed must be decided again on fresh reads:
    it deletes something, counts something, or moves the job out of Pending/Running. A watch that
    lags shows pods as they were, or not yet at all, and only these decisions read a meaning into
    that. The rest (creating children, which is idempotent; recording conditions) may go ahead:
    the status patch carries the resourceVersion it was decided on, so a decision on a stale job
    object is refused with 409 and made again."""
    if plan.delete or plan.delete_objects:
        return True
    status = plan.status or {}
    if any(key in status and status[key] != getattr(current, field) for key, field in COUNTERS.items()):
        return True
    phase = status.get("phase")
    return phase is not None and phase != current.phase and phase not in ("Pending", "Running")


@dataclass(frozen=True)
class Observed:
    pods: Sequence[Mapping[str, Any]]
    live_nodes: Collection[str] | None
    now: datetime
    service: Mapping[str, Any] | None = None  # while RollingOut: the GANInferenceService of spec.rollout
    # Nodes whose Ready condition is not True, and since when (its last transition).
    not_ready_since: Mapping[str, datetime] = field(default_factory=dict)


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _label_number(pod: Mapping[str, Any], label: str) -> int:
    """A pod's gang or rank label; -1 for a pod without it, which then belongs to no gang."""
    try:
        return int(pod["metadata"]["labels"][label])
    except (KeyError, ValueError):
        return -1


def _gang_of(pod: Mapping[str, Any]) -> int:
    return _label_number(pod, naming.GANG_LABEL)


def _rank_of(pod: Mapping[str, Any]) -> int:
    return _label_number(pod, naming.RANK_LABEL)


ConditionT = TypeVar("ConditionT", Condition, ServiceCondition)


def upsert_condition(conditions: list[ConditionT], new: ConditionT) -> list[ConditionT]:
    """Kubernetes convention: lastTransitionTime moves only when the status flips."""
    out, found = [], False
    for condition in conditions:
        if condition.type == new.type:
            found = True
            if condition.status == new.status:
                new = new.model_copy(update={"last_transition_time": condition.last_transition_time})
            condition = new
        out.append(condition)
    if not found:
        out.append(new)
    return out


def set_condition(conditions: list[Condition], type_: ConditionType, status: bool, reason: str, message: str,
                  now: datetime) -> list[Condition]:
    value: Literal["True", "False"] = "True" if status else "False"
    return upsert_condition(conditions, Condition(type=type_, status=value, reason=reason,
                                                  message=message[-CONDITION_MESSAGE_LIMIT:],
                                                  last_transition_time=rfc3339(now)))


OPERATOR_FIELDS = ("phase", "conditions", "observed_generation", "launched_generation", "gang", "launched_gang",
                   "workers",
                   "preemptions", "failures", "last_failure", "artifact", "export_attempts", "rollout",
                   "start_time", "gang_launch_time", "completion_time")


def status_patch(status: GANTrainingJobStatus) -> dict[str, Any]:
    """Only the fields the operator owns; progress, checkpoint and metrics belong to the trainer."""
    wire = status.to_wire()
    keys = {GANTrainingJobStatus.model_fields[name].alias or name for name in OPERATOR_FIELDS}
    return {key: value for key, value in wire.items() if key in keys}


def reconcile(job: children.JobRef, spec: GANTrainingJobSpec, current: GANTrainingJobStatus, generation: int,
              observed: Observed, settings: OperatorSettings) -> Plan:
    status = current.model_copy(deep=True)
    status.observed_generation = generation
    plan = Plan()
    observed = dataclasses.replace(observed, pods=[pod for pod in observed.pods if controlled_by(pod, job.uid)])
    is_export = [naming.EXPORT_LABEL in pod["metadata"].get("labels", {}) for pod in observed.pods]
    exports = [pod for pod, export in zip(observed.pods, is_export, strict=True) if export]
    workers = dataclasses.replace(observed, pods=[pod for pod, export in zip(observed.pods, is_export, strict=True)
                                                  if not export])
    expire_at = _pods_expire_at(spec, status)
    if status.phase in TERMINAL_PHASES:
        _stop_leftovers(plan, observed, settings, gang=None,
                        keep_finished=expire_at is None or observed.now < expire_at)
    elif status.phase == "Exporting":
        _stop_leftovers(plan, workers, settings, gang=None)
        _export(plan, job, spec, status, dataclasses.replace(observed, pods=exports), settings)
    elif status.phase == "RollingOut":
        _stop_leftovers(plan, workers, settings, gang=None)
        _follow_rollout(plan, job, spec, status, observed.service, observed.now)
    elif spec.suspend:
        # Stops the gangs before the current one; the current one becomes "before" once the
        # suspension is recorded, so its pods are stopped on the next pass, as after a restart.
        _stop_leftovers(plan, workers, settings, gang=status.gang)
        _suspend(plan, status, observed.now)
    else:
        if status.phase == "Suspended":
            _resume(plan, status, observed.now)
        stale_left = _stop_leftovers(plan, workers, settings, gang=status.gang)
        if _past_deadline(spec, status, observed.now):
            _end_failed(plan, status, DEADLINE_EXCEEDED,
                        f"training ran past activeDeadlineSeconds ({spec.active_deadline_seconds})", observed.now)
        elif status.launched_gang != status.gang:
            _launch(plan, job, spec, status, workers, settings, stale_left, generation)
        else:
            _supervise(plan, job, spec, status, workers)
            _note_spec_applied(job, spec, status, workers, settings, generation, observed.now)
    if status != current:
        plan.status = status_patch(status)
    if plan.requeue_after is None and status.phase not in TERMINAL_PHASES:
        plan.requeue_after = settings.resync_seconds
    if plan.requeue_after is None and status.phase in TERMINAL_PHASES and expire_at is not None and observed.pods:
        # Come back when the finished pods' time is up.
        plan.requeue_after = max(1.0, (expire_at - observed.now).total_seconds())
    return plan


def _suspend(plan: Plan, status: GANTrainingJobStatus, now: datetime) -> None:
    """spec.suspend: the running gang becomes an old gang, which _stop_leftovers stops (SIGTERM: an
    emergency checkpoint); the next gang starts on resume."""
    if status.phase == "Suspended":
        return
    if status.launched_gang == status.gang:
        status.gang += 1
    status.phase = "Suspended"
    status.workers = WorkersStatus(ready=0, total=0)
    message = "spec.suspend: the gang is stopped; it resumes from the newest checkpoint when suspend is false"
    status.conditions = set_condition(status.conditions, "Suspended", True, "Suspended", message, now)
    status.conditions = set_condition(status.conditions, "Running", False, "Suspended", message, now)
    plan.events.append(Event("Normal", SUSPENDED, message))


def _resume(plan: Plan, status: GANTrainingJobStatus, now: datetime) -> None:
    status.phase = "Restarting"
    status.start_time = rfc3339(now)  # activeDeadlineSeconds counts training time since the resume
    message = f"resuming from the newest checkpoint with gang {status.gang}"
    status.conditions = set_condition(status.conditions, "Suspended", False, "Resumed", message, now)
    plan.events.append(Event("Normal", RESUMED, message))


def _past_deadline(spec: GANTrainingJobSpec, status: GANTrainingJobStatus, now: datetime) -> bool:
    started = parse_time(status.start_time)
    return (spec.active_deadline_seconds is not None and started is not None
            and now > started + timedelta(seconds=spec.active_deadline_seconds))


def _end_failed(plan: Plan, status: GANTrainingJobStatus, reason: str, summary: str, now: datetime) -> None:
    """The job fails for a reason of its own spec (a deadline, a timeout), counted neither as a
    failure nor as a preemption; its running pods are then stopped, as for any ended job."""
    status.phase = "Failed"
    status.completion_time = rfc3339(now)
    status.workers = WorkersStatus(ready=0, total=0)
    status.conditions = set_condition(status.conditions, "Running", False, reason, summary, now)
    status.conditions = set_condition(status.conditions, "Failed", True, reason, summary, now)
    plan.events.append(Event("Warning", FAILED, summary))
    plan.requeue_after = 0.0


def _pods_expire_at(spec: GANTrainingJobSpec, status: GANTrainingJobStatus) -> datetime | None:
    """When the ended job's pods go (spec.ttlSecondsAfterFinished); None: they stay."""
    ended = parse_time(status.completion_time)
    ttl = spec.ttl_seconds_after_finished
    return None if ttl is None or ended is None else ended + timedelta(seconds=ttl)


def _stop_leftovers(plan: Plan, observed: Observed, settings: OperatorSettings, gang: int | None,
                    keep_finished: bool = True) -> bool:
    """Delete pods that are not part of the current gang (all of them once the job is over, except
    finished ones, kept for their logs unless `keep_finished` is false). Returns whether any is
    still there."""
    left = False
    for pod in observed.pods:
        if gang is not None and _gang_of(pod) == gang:
            continue
        phase = pod.get("status", {}).get("phase")
        if gang is None and keep_finished and phase in ("Succeeded", "Failed"):
            continue
        left = True
        deletion = stop_pod(pod, observed, settings)
        if deletion is not None:
            plan.delete.append(deletion)
    if left:
        plan.requeue_after = 1.0
    return left


def stop_pod(pod: Mapping[str, Any], observed: Observed, settings: OperatorSettings) -> DeletePod | None:
    """How to stop a pod: a plain delete (SIGTERM, then its grace period); a force delete where
    nobody will ever confirm it stopped (its node is gone, or past the fencing bound); None while
    kubelet is still stopping it."""
    name = pod["metadata"]["name"]
    deleting = parse_time(pod["metadata"].get("deletionTimestamp"))
    gone = node_gone(pod, observed.live_nodes)
    if deleting is None:
        return DeletePod(name, force=gone)
    if gone or fenced(pod, deleting, observed.now, observed.not_ready_since, settings.lost_pod_timeout_seconds):
        return DeletePod(name, force=True)
    return None


def _launch(plan: Plan, job: children.JobRef, spec: GANTrainingJobSpec, status: GANTrainingJobStatus,
            observed: Observed, settings: OperatorSettings, stale_left: bool, generation: int) -> None:
    if stale_left:
        # Two gangs must never overlap: the old one may still be writing its emergency checkpoint.
        return
    wait = _failure_backoff(status, observed.now, settings)
    if wait > 0:
        plan.requeue_after = wait
        return
    config = children.config_map(job, spec)
    sha = children.gang_fingerprint(job, spec, settings)
    plan.create.extend(children.trainer_rbac(job))
    plan.create.append(children.rendezvous_service(job))
    plan.create.append(children.gang_network_policy(job))
    if spec.checkpoint.uri is None:
        plan.create.append(children.checkpoint_claim(job, settings))
    plan.apply.append(config)
    present = {_rank_of(pod) for pod in observed.pods if _gang_of(pod) == status.gang}
    for rank in range(spec.resources.workers):
        if rank not in present:
            plan.create.append(children.worker_pod(job, spec, settings, status.gang, rank, sha))
    status.launched_gang = status.gang
    status.launched_generation = generation
    status.start_time = status.start_time or rfc3339(observed.now)
    status.gang_launch_time = rfc3339(observed.now)
    status.workers = WorkersStatus(ready=0, total=spec.resources.workers)
    if status.phase != "Restarting":
        status.phase = "Pending"
    message = f"gang {status.gang}: {spec.resources.workers} worker pod(s)"
    status.conditions = set_condition(status.conditions, "Created", True, "GangCreated", message, observed.now)
    status.conditions = set_condition(status.conditions, "SpecApplied", True, "GangUpToDate",
                                      f"gang {status.gang} starts from the current spec", observed.now)
    plan.events.append(Event("Normal", GANG_CREATED, f"created {message}"))


def _note_spec_applied(job: children.JobRef, spec: GANTrainingJobSpec, status: GANTrainingJobStatus,
                       observed: Observed, settings: OperatorSettings, generation: int, now: datetime) -> None:
    """observedGeneration says the operator acted on the spec; this condition says whether the
    running gang did. A gang keeps the trainer configuration and pod template it started with
    (each pod carries their fingerprint); an edit of them reaches the trainer with the next gang."""
    if status.phase not in ("Pending", "Running") or generation == status.launched_generation:
        return  # the launch recorded GangUpToDate for this generation; no fingerprint on idle passes
    stamps = {pod["metadata"].get("annotations", {}).get(naming.CONFIG_HASH_ANNOTATION)
              for pod in observed.pods if _gang_of(pod) == status.gang} - {None}
    if not stamps:
        return
    if stamps == {children.gang_fingerprint(job, spec, settings)}:
        status.conditions = set_condition(status.conditions, "SpecApplied", True, "GangUpToDate",
                                          f"gang {status.gang} starts from the current spec", now)
    else:
        status.conditions = set_condition(
            status.conditions, "SpecApplied", False, "AtNextGang",
            f"the spec changed since gang {status.gang} started (generation {status.launched_generation}); "
            "the running gang keeps its trainer configuration and pod template until the next gang", now)


def _failure_backoff(status: GANTrainingJobStatus, now: datetime, settings: OperatorSettings) -> float:
    failure = status.last_failure
    if failure is None:
        return 0.0
    if failure.disruption:
        # A node that refused the pod at admission may refuse the next one too: wait a little.
        if not rejected_at_admission(failure.reason):
            return 0.0
        delay = settings.failure_backoff_seconds
    elif status.failures == 0:
        return 0.0
    else:
        delay = min(settings.failure_backoff_seconds * 2 ** (status.failures - 1),
                    settings.max_failure_backoff_seconds)
    since = parse_time(failure.time) or now
    return max(0.0, (since + timedelta(seconds=delay) - now).total_seconds())


def _workers(job: children.JobRef, spec: GANTrainingJobSpec, status: GANTrainingJobStatus,
             observed: Observed) -> list[Worker]:
    pods = {_rank_of(pod): pod for pod in observed.pods if _gang_of(pod) == status.gang}
    return [classify(pods.get(rank), rank, naming.worker_pod(job.name, status.gang, rank), observed.live_nodes)
            for rank in range(spec.resources.workers)]


def _supervise(plan: Plan, job: children.JobRef, spec: GANTrainingJobSpec, status: GANTrainingJobStatus,
               observed: Observed) -> None:
    workers = _workers(job, spec, status, observed)
    now = observed.now
    disrupted = [w for w in workers if w.state in (WorkerState.DISRUPTED, WorkerState.MISSING, WorkerState.REJECTED)]
    failed = [w for w in workers if w.state is WorkerState.FAILED]
    if disrupted:
        # A disruption anywhere explains the rest: peers of an evicted rank exit with errors too.
        worker = disrupted[0]
        if status.preemptions + 1 > spec.max_preemptions:
            _fail(plan, status, worker, now, f"maxPreemptions {spec.max_preemptions} exceeded", counted=False)
        else:
            _restart(plan, status, worker, now, disruption=True)
    elif failed:
        # Peers of a crashed rank exit 7 (their collective lost it): the crash is the one failure.
        causes = [w for w in failed if w.exit_code != ExitCode.DISTRIBUTED_ERROR] or failed
        worker = causes[0]
        if worker.final:
            _fail(plan, status, worker, now, "the failure cannot be fixed by a retry")
        elif status.failures + 1 > spec.backoff_limit:
            _fail(plan, status, worker, now, f"backoffLimit {spec.backoff_limit} exceeded")
        else:
            _restart(plan, status, worker, now, disruption=False)
    elif all(w.state is WorkerState.SUCCEEDED for w in workers):
        status.workers = WorkersStatus(ready=0, total=len(workers))
        status.conditions = set_condition(status.conditions, "Running", False, "Finished", "training finished", now)
        if spec.export.enabled:
            status.phase = "Exporting"
            status.conditions = set_condition(status.conditions, "Exported", False, "Exporting",
                                              "exporting the EMA generator to ONNX", now)
            plan.events.append(Event("Normal", TRAINING_FINISHED, "training finished; exporting the generator"))
            plan.requeue_after = 0.0
        else:
            _succeed(plan, status, "TrainingFinished", "every worker exited 0", "training finished", now)
    else:
        running = [w for w in workers if w.state in (WorkerState.RUNNING, WorkerState.SUCCEEDED)]
        status.workers = WorkersStatus(ready=sum(w.ready for w in workers), total=len(workers))
        if len(running) == len(workers):
            if status.phase != "Running":
                plan.events.append(Event("Normal", RUNNING, f"gang {status.gang}: all workers running"))
            status.phase = "Running"
            status.conditions = set_condition(status.conditions, "Running", True, "AllWorkersRunning",
                                              f"gang {status.gang}", now)
            status.conditions = set_condition(status.conditions, "Restarting", False, "AllWorkersRunning", "", now)
        else:
            waiting = next((w for w in workers if w.state is WorkerState.PENDING), None)
            if waiting is not None and waiting.reason:
                status.conditions = set_condition(status.conditions, "Running", False, waiting.reason,
                                                  f"{waiting.name}: {waiting.reason}", now)
            launched = parse_time(status.gang_launch_time)
            timeout = spec.launch_timeout_seconds
            if timeout is not None and launched is not None and now > launched + timedelta(seconds=timeout):
                why = f"{waiting.name}: {waiting.reason or 'not running'}" if waiting is not None else "not running"
                _end_failed(plan, status, GANG_NOT_RUNNING,
                            f"gang {status.gang} not running {timeout} s after launch (launchTimeoutSeconds): {why}",
                            now)


def _succeed(plan: Plan, status: GANTrainingJobStatus, reason: str, message: str, event: str, now: datetime) -> None:
    status.phase = "Succeeded"
    status.completion_time = rfc3339(now)
    status.conditions = set_condition(status.conditions, "Succeeded", True, reason, message, now)
    plan.events.append(Event("Normal", SUCCEEDED, event))


def _follow_rollout(plan: Plan, job: children.JobRef, spec: GANTrainingJobSpec, status: GANTrainingJobStatus,
                    service: Mapping[str, Any] | None, now: datetime) -> None:
    assert status.artifact is not None and spec.rollout is not None
    decision = job_rollout.follow(job, spec, status.artifact.revision, service)
    if decision.write is not None:
        plan.apply.append(decision.write)
    if status.rollout is None or status.rollout.phase != decision.rollout.phase:
        plan.events.append(Event("Normal", ROLLING_OUT, f"{decision.rollout.service}: {decision.rollout.phase}: "
                                                        f"{decision.rollout.message}"))
    status.rollout = decision.rollout
    message = decision.rollout.message
    if decision.outcome == "promoted":
        status.conditions = set_condition(status.conditions, "RolledOut", True, "Promoted", message, now)
        _succeed(plan, status, "Promoted", message, f"the generator is served: {message}", now)
    elif decision.outcome == "rolled back":
        status.phase, status.completion_time = "Failed", rfc3339(now)
        status.conditions = set_condition(status.conditions, "RolledOut", False, ROLLED_BACK, message, now)
        status.conditions = set_condition(status.conditions, "Failed", True, ROLLED_BACK, message, now)
        plan.events.append(Event("Warning", ROLLED_BACK, message))
    else:
        status.conditions = set_condition(status.conditions, "RolledOut", False, decision.rollout.phase, message, now)


def _export(plan: Plan, job: children.JobRef, spec: GANTrainingJobSpec, status: GANTrainingJobStatus,
            observed: Observed, settings: OperatorSettings) -> None:
    """One export pod at a time; an interrupted one is replaced, a failed export fails the job (the
    checkpoint is untouched either way)."""
    now = observed.now
    checkpoint = status.checkpoint.uri if status.checkpoint else None
    if checkpoint is None or children.claim_location(checkpoint) is None:
        why = ("no checkpoint was reported by the trainer" if checkpoint is None
               else f"the checkpoint {checkpoint} is not on a claim; export reads pvc:// checkpoints")
        _fail_export(plan, status, "ExportFailed", why, now)
        return
    name = naming.export_pod(job.name, status.export_attempts)
    pod = next((p for p in observed.pods if p["metadata"]["name"] == name), None)
    if status.export_attempts and pod is not None:
        outcome = export_outcome(pod, observed.live_nodes)
        if outcome is None:
            plan.requeue_after = settings.resync_seconds
            return
        if outcome.artifact is not None:
            artifact = status.artifact = outcome.artifact
            message = f"revision {artifact.revision} at {artifact.uri} (sha256 {artifact.sha256})"
            status.conditions = set_condition(status.conditions, "Exported", True, "Exported", message, now)
            plan.events.append(Event("Normal", EXPORTED, f"exported {message}"))
            if spec.rollout is None:
                _succeed(plan, status, "Exported", message, "training finished and the generator is exported", now)
            else:
                status.phase = ROLLING_OUT
                plan.events.append(Event("Normal", ROLLING_OUT, f"revision {artifact.revision} goes to "
                                                                f"GANInferenceService {spec.rollout.service}"))
                plan.requeue_after = 0.5
            return
        if outcome.final or status.export_attempts >= settings.max_export_attempts:
            why = outcome.message if outcome.final else (
                f"{status.export_attempts} export attempts ended without a revision; last: {outcome.message}")
            _fail_export(plan, status, outcome.reason, why, now)
            return
        plan.events.append(Event("Warning", EXPORT_FAILED, f"export attempt {status.export_attempts} ended: "
                                                           f"{outcome.message}; retrying"))
    elif status.export_attempts >= settings.max_export_attempts:
        _fail_export(plan, status, "ExportFailed", f"export pod {name} disappeared "
                                                   f"{status.export_attempts} times", now)
        return
    location = children.claim_location(spec.export.model_repository)
    assert location is not None  # the API only accepts pvc:// model repositories
    plan.create.append(serving_children.model_repository_claim(job.namespace, location.claim, settings))
    status.export_attempts += 1
    plan.create.append(serving_children.export_pod(job, spec, settings, checkpoint, status.export_attempts))
    plan.events.append(Event("Normal", EXPORT_STARTED, f"export attempt {status.export_attempts} from {checkpoint}"))
    plan.requeue_after = settings.resync_seconds


@dataclass(frozen=True)
class ExportOutcome:
    artifact: ArtifactStatus | None
    reason: str = ""
    message: str = ""
    final: bool = False  # no retry can fix it


def export_outcome(pod: Mapping[str, Any], live_nodes: Collection[str] | None) -> ExportOutcome | None:
    """None while the export pod runs; its artifact once it succeeded; else why it did not."""
    worker = classify(pod, 0, pod["metadata"]["name"], live_nodes, container=naming.EXPORT_CONTAINER)
    if worker.state is WorkerState.SUCCEEDED:
        report = (terminated_state(pod, naming.EXPORT_CONTAINER) or {}).get("message") or "{}"
        try:
            return ExportOutcome(ArtifactStatus.model_validate_json(report))
        except ValueError as error:
            return ExportOutcome(None, "ExportFailed", f"the export pod reported no revision: {error}", final=True)
    if worker.state in (WorkerState.DISRUPTED, WorkerState.REJECTED):
        return ExportOutcome(None, worker.reason, f"{pod['metadata']['name']} disrupted: {worker.reason}")
    if worker.state is WorkerState.FAILED:
        final = worker.exit_code == int(ExitCode.EXPORT_ERROR)
        return ExportOutcome(None, "ExportFailed", worker.message or f"exit code {worker.exit_code}", final=final)
    return None


def _fail_export(plan: Plan, status: GANTrainingJobStatus, reason: str, message: str, now: datetime) -> None:
    status.phase = "Failed"
    status.completion_time = rfc3339(now)
    summary = f"export failed ({reason}); the checkpoint is kept: {message}"
    status.conditions = set_condition(status.conditions, "Exported", False, reason, message, now)
    status.conditions = set_condition(status.conditions, "Failed", True, reason, summary, now)
    plan.events.append(Event("Warning", EXPORT_FAILED, summary))
    plan.events.append(Event("Warning", FAILED, summary))


def _failure_record(worker: Worker, now: datetime, disruption: bool) -> FailureStatus:
    return FailureStatus(reason=worker.reason or worker.state.value, message=worker.message,
                         exit_code=worker.exit_code, rank=worker.rank, time=rfc3339(now), disruption=disruption)


def _restart(plan: Plan, status: GANTrainingJobStatus, worker: Worker, now: datetime, disruption: bool) -> None:
    status.last_failure = _failure_record(worker, now, disruption)
    if disruption:
        status.preemptions += 1
        summary = f"rank {worker.rank} ({worker.name}) disrupted: {worker.reason}; resuming from the newest checkpoint"
    else:
        status.failures += 1
        summary = (f"rank {worker.rank} ({worker.name}) failed with exit code {worker.exit_code} ({worker.reason}); "
                   f"failure {status.failures}, retrying from the newest checkpoint")
    status.gang += 1
    status.phase = "Restarting"
    status.workers = WorkersStatus(ready=0, total=status.workers.total if status.workers else 0)
    status.conditions = set_condition(status.conditions, "Running", False, worker.reason or "Restarting", summary, now)
    status.conditions = set_condition(status.conditions, "Restarting", True,
                                      "Preempted" if disruption else "WorkerFailed", summary, now)
    plan.events.append(Event("Warning", PREEMPTED if disruption else WORKER_FAILED, summary))
    plan.requeue_after = 0.0


def _fail(plan: Plan, status: GANTrainingJobStatus, worker: Worker, now: datetime, why: str,
          counted: bool = True) -> None:
    """The job fails for good: `counted` a failure of the workload, else the last of too many disruptions."""
    if counted:
        status.failures += 1
        what = f"failed with exit code {worker.exit_code}"
    else:
        status.preemptions += 1
        what = "was disrupted"
    status.last_failure = _failure_record(worker, now, disruption=not counted)
    summary = f"rank {worker.rank} ({worker.name}) {what} ({worker.reason}); {why}"
    status.phase = "Failed"
    status.completion_time = rfc3339(now)
    message = f"{summary}\n{worker.message}".strip()
    status.conditions = set_condition(status.conditions, "Running", False, worker.reason, summary, now)
    status.conditions = set_condition(status.conditions, "Restarting", False, worker.reason, summary, now)
    status.conditions = set_condition(status.conditions, "Failed", True, worker.reason, message, now)
    plan.events.append(Event("Warning", FAILED, summary))
    plan.requeue_after = 0.0


def invalid_spec(current: GANTrainingJobStatus, problems: str, now: datetime) -> Plan:
    """A stored spec the models reject. The CRD schema makes this unreachable for new objects; a
    spec stored before a schema upgrade is not. Fails the job once; later passes change nothing."""
    if current.phase == "Failed":
        return Plan()
    status = current.model_copy(deep=True)
    status.phase = "Failed"
    status.completion_time = rfc3339(now)
    status.conditions = set_condition(status.conditions, "Failed", True, INVALID_SPEC, problems, now)
    return Plan(status=status_patch(status), events=[Event("Warning", INVALID_SPEC, problems)])
