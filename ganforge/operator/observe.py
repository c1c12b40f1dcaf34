"""Pure classification of worker pods: is this pod pending, running, done, disrupted or failed?

The distinction that matters is *disruption* vs *failure* (docs/operator.md, "Failure semantics").
A disruption is the infrastructure's doing (a DisruptionTarget condition, an eviction, a node that
is gone, a pod deleted by someone else, the trainer's own exit after a SIGTERM, a pod refused at
admission): the gang restarts and resumes, counted in `preemptions`, never against backoffLimit.
A failure is the workload's doing (a non-zero exit, an OOM kill, any other signal on a node that
is still there): it counts against backoffLimit with a backoff, and some exit codes (bad config,
bad data) are final. A rank that succeeded stays succeeded whatever happens to its node later.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ganforge.api.exit_codes import ExitCode, describe
from ganforge.operator import naming

# Pod conditions/reasons that Kubernetes components set when they, not the workload, end a pod.
DISRUPTION_CONDITION = "DisruptionTarget"
DISRUPTION_POD_REASONS = {"Evicted", "NodeLost", "Shutdown", "Terminated", "NodeShutdown", "Preempting"}


# Reasons kubelet gives a pod it refused at admission, before any container ran: the node's state
# at that moment (resources taken by another pod, a device plugin restarting), so a retry may land.
ADMISSION_REJECTIONS = {"UnexpectedAdmissionError", "NodeAffinity", "NodeSelectorMismatching",
                        "TopologyAffinityError", "SMTAlignmentError"}
OOM_KILLED = "OOMKilled"


def rejected_at_admission(pod_reason: str | None) -> bool:
    return bool(pod_reason) and (pod_reason in ADMISSION_REJECTIONS or str(pod_reason).startswith("OutOf"))


class WorkerState(enum.Enum):
    MISSING = "missing"
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    DISRUPTED = "disrupted"
    REJECTED = "rejected"  # refused at admission: retried like a disruption, after a backoff
    FAILED = "failed"


@dataclass(frozen=True)
class Worker:
    rank: int
    name: str
    state: WorkerState
    ready: bool = False
    reason: str = ""
    message: str = ""
    exit_code: int | None = None
    final: bool = False  # a failure that no retry can fix (bad spec or data)


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def not_ready_since(node: Mapping[str, Any]) -> datetime | None:
    """None for a Ready node; else since when it is not (its Ready condition's last transition, or
    its creation when it never reported one)."""
    conditions = (node.get("status") or {}).get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    if ready is not None and ready.get("status") == "True":
        return None
    since = parse_time(ready.get("lastTransitionTime")) if ready is not None else None
    return since or parse_time(node.get("metadata", {}).get("creationTimestamp"))


def terminated_state(pod: Mapping[str, Any], container: str = naming.TRAINER_CONTAINER,
                     key: str = "containerStatuses") -> Mapping[str, Any] | None:
    """`state.terminated` of one container (`key` initContainerStatuses for an init container)."""
    for status in pod.get("status", {}).get(key) or []:
        if status.get("name") == container:
            return (status.get("state") or {}).get("terminated")
    return None


def _disruption(pod: Mapping[str, Any], live_nodes: Collection[str] | None) -> tuple[str, str] | None:
    status = pod.get("status", {})
    for condition in status.get("conditions") or []:
        if condition.get("type") == DISRUPTION_CONDITION and condition.get("status") == "True":
            return condition.get("reason") or "DisruptionTarget", condition.get("message") or ""
    if status.get("reason") in DISRUPTION_POD_REASONS:
        return status["reason"], status.get("message") or ""
    if node_gone(pod, live_nodes):
        return "NodeLost", f"node {pod['spec']['nodeName']} no longer exists"
    return None


def node_gone(pod: Mapping[str, Any], live_nodes: Collection[str] | None) -> bool:
    """The pod was bound to a node that no longer exists (False when nodes were not checked)."""
    node = pod.get("spec", {}).get("nodeName")
    return bool(node) and live_nodes is not None and node not in live_nodes


def controlled_by(manifest: Mapping[str, Any], uid: str) -> bool:
    """Whether the object's controller is the object with `uid`. Labels name a job; only the
    owner reference says which one: a job deleted and applied again under the same name must not
    adopt the pods its predecessor left Terminating."""
    return any(ref.get("controller") and ref.get("uid") == uid
               for ref in manifest.get("metadata", {}).get("ownerReferences") or [])


def fenced(pod: Mapping[str, Any], deleting: datetime, now: datetime, not_ready_since: Mapping[str, datetime],
           bound_seconds: float) -> bool:
    """Whether a Terminating pod on a node that still exists may be force-deleted: only when that
    node has not been Ready for `bound_seconds` (lostPodTimeoutSeconds) and the pod is that far past
    its deletion, the fencing bound of docs/operator.md. On a Ready node kubelet is still stopping
    it, and a gang started beside it could write the same checkpoint directory."""
    since = not_ready_since.get(pod.get("spec", {}).get("nodeName") or "")
    bound = timedelta(seconds=bound_seconds)
    return since is not None and now > since + bound and now > deleting + bound


def classify(pod: Mapping[str, Any] | None, rank: int, name: str,
             live_nodes: Collection[str] | None = None, container: str = naming.TRAINER_CONTAINER) -> Worker:
    """One worker pod -> its state. `live_nodes=None` means node existence was not checked."""
    if pod is None:
        return Worker(rank, name, WorkerState.MISSING)
    metadata, status = pod.get("metadata", {}), pod.get("status", {})
    terminated = terminated_state(pod, container)
    exit_code = terminated.get("exitCode") if terminated else None
    message = (terminated or {}).get("message") or status.get("message") or ""
    phase = status.get("phase")

    if phase == "Succeeded":  # before any disruption: its work is done, whatever its node does now
        return Worker(rank, name, WorkerState.SUCCEEDED, exit_code=0)
    disruption = _disruption(pod, live_nodes)
    if disruption is not None:
        return Worker(rank, name, WorkerState.DISRUPTED, reason=disruption[0], message=disruption[1] or message,
                      exit_code=exit_code)
    if phase == "Failed":
        return _failed(rank, name, exit_code, (terminated or {}).get("reason"), status.get("reason"), message)
    if metadata.get("deletionTimestamp"):
        # Someone else is deleting a pod of the current gang (the operator deletes only old gangs):
        # the pod is going away through no fault of the training code.
        return Worker(rank, name, WorkerState.DISRUPTED, reason="WorkerPodDeleted",
                      message=f"pod {name} is being deleted")
    if phase == "Running":
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        return Worker(rank, name, WorkerState.RUNNING, ready=ready)
    return Worker(rank, name, WorkerState.PENDING, reason=_waiting_reason(status))


def _failed(rank: int, name: str, exit_code: int | None, terminated_reason: str | None, pod_reason: str | None,
            message: str) -> Worker:
    if exit_code is None:
        if rejected_at_admission(pod_reason):
            return Worker(rank, name, WorkerState.REJECTED, reason=str(pod_reason),
                          message=message or f"refused by the node at admission ({pod_reason})")
        # Failed before the container ran (e.g. an image the node cannot run): fix the spec/settings.
        return Worker(rank, name, WorkerState.FAILED, reason=pod_reason or "PodFailed", message=message,
                      final=True)
    if terminated_reason == OOM_KILLED:
        return Worker(rank, name, WorkerState.FAILED, reason=OOM_KILLED, exit_code=exit_code,
                      message=message or "killed for exceeding its memory limit: raise resources.memory or "
                                         "lower training.batchSize")
    info = describe(exit_code)
    if not info.counts_against_backoff:  # the trainer's own exits after a SIGTERM
        return Worker(rank, name, WorkerState.DISRUPTED, reason="Preempted", message=message or info.meaning,
                      exit_code=exit_code)
    reason = "KilledBySignal" if exit_code >= 128 or exit_code < 0 else _reason_for(exit_code)
    return Worker(rank, name, WorkerState.FAILED, reason=reason, message=message or info.meaning,
                  exit_code=exit_code, final=not info.resumable)


def _reason_for(exit_code: int) -> str:
    try:
        return "".join(part.capitalize() for part in ExitCode(exit_code).name.split("_"))
    except ValueError:
        return "UserCodeFailed"


def unscheduled(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """A pod status's PodScheduled=False condition: the scheduler's reason and message why it
    waits for a node (no room, a claim that does not exist); None once scheduled."""
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return condition  # type: ignore[no-any-return]
    return None


def _waiting_reason(status: Mapping[str, Any]) -> str:
    if (condition := unscheduled(status)) is not None:
        return condition.get("reason") or "Unschedulable"
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting")
        if waiting:
            return waiting.get("reason") or "Waiting"
    return ""
