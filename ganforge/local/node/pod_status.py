"""Pure functions from observed container runs to the Pod status kubelet would report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

TERMINAL_PHASES = {"Succeeded", "Failed"}


@dataclass(frozen=True)
class ContainerView:
    """What the node knows about one container right now."""

    name: str
    image: str
    attempts: int
    """How many runs were launched (restartCount = attempts - 1)."""
    running_since: str | None = None
    current_exit: Mapping[str, Any] | None = None
    """exit.json of the newest run if it has ended."""
    previous_exit: Mapping[str, Any] | None = None
    previous_started: str | None = None
    current_started: str | None = None
    will_restart: bool = False
    waiting_reason: str | None = None
    waiting_message: str = ""
    ready: bool = False
    started: bool = False
    container_id: str = ""


def will_restart(restart_policy: str, exit_code: int) -> bool:
    if restart_policy == "Always":
        return True
    if restart_policy == "OnFailure":
        return exit_code != 0
    return False


def _terminated(record: Mapping[str, Any], started_at: str | None, container_id: str) -> dict[str, Any]:
    state: dict[str, Any] = {
        "exitCode": int(record["exitCode"]),
        "reason": record.get("reason") or ("Completed" if record["exitCode"] == 0 else "Error"),
        "finishedAt": record.get("finishedAt"),
        "startedAt": started_at or record.get("finishedAt"),
        "containerID": container_id,
    }
    if record.get("signal"):
        state["signal"] = int(record["signal"])
    if record.get("message"):
        state["message"] = record["message"]
    return state


def container_status(view: ContainerView) -> dict[str, Any]:
    state: dict[str, Any]
    if view.waiting_reason and view.attempts == 0:
        state = {"waiting": {"reason": view.waiting_reason, "message": view.waiting_message}}
    elif view.running_since is not None:
        state = {"running": {"startedAt": view.running_since}}
    elif view.current_exit is not None and view.will_restart:
        state = {"waiting": {"reason": "CrashLoopBackOff",
                             "message": f"back-off restarting failed container {view.name}"}}
    elif view.current_exit is not None:
        state = {"terminated": _terminated(view.current_exit, view.current_started, view.container_id)}
    else:
        state = {"waiting": {"reason": view.waiting_reason or "ContainerCreating"}}
    status: dict[str, Any] = {
        "name": view.name,
        "image": view.image,
        "imageID": "",
        "containerID": view.container_id,
        "ready": view.ready,
        "started": view.started,
        "restartCount": max(view.attempts - 1, 0),
        "state": state,
        "lastState": {},
    }
    last = view.current_exit if (view.current_exit is not None and view.will_restart) else view.previous_exit
    last_started = view.current_started if last is view.current_exit else view.previous_started
    if last is not None and "terminated" not in state:
        status["lastState"] = {"terminated": _terminated(last, last_started, view.container_id)}
    return status


def pod_phase(views: Sequence[ContainerView], pod_failed: bool) -> str:
    if pod_failed:
        return "Failed"
    if any(view.attempts == 0 for view in views):
        return "Pending"
    if all(view.current_exit is not None and not view.will_restart for view in views):
        return "Succeeded" if all(int(view.current_exit["exitCode"]) == 0 for view in views if view.current_exit) \
            else "Failed"
    return "Running"


def condition(kind: str, ok: bool, now: str, previous: Mapping[str, Mapping[str, Any]],
              reason: str | None = None) -> dict[str, Any]:
    status = "True" if ok else "False"
    earlier = previous.get(kind)
    # lastTransitionTime only moves when the status flips, per API conventions.
    transition = earlier["lastTransitionTime"] if earlier and earlier.get("status") == status else now
    result: dict[str, Any] = {"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": transition}
    if reason and not ok:
        result["reason"] = reason
    return result


def pod_conditions(views: Sequence[ContainerView], sandbox_ready: bool, phase: str, now: str,
                   previous: Sequence[Mapping[str, Any]], initialized: bool = True) -> list[dict[str, Any]]:
    by_type = {item["type"]: item for item in previous}
    containers_ready = bool(views) and all(view.ready for view in views) and phase == "Running"
    not_ready_reason = "PodCompleted" if phase in TERMINAL_PHASES else "ContainersNotReady"
    return [
        condition("PodReadyToStartContainers", sandbox_ready, now, by_type),
        condition("Initialized", initialized, now, by_type, "ContainersNotInitialized"),
        condition("ContainersReady", containers_ready, now, by_type, not_ready_reason),
        condition("Ready", containers_ready, now, by_type, not_ready_reason),
    ]
