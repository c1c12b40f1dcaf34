"""Per-container supervisor, the node runtime's equivalent of a containerd shim.

The agent starts `python -m ganforge.local.node.shim CONTAINER_DIR` inside the pod's network
namespace and a fresh mount namespace (via `ip netns exec`). The shim moves to a UTS namespace of
its own named after the pod, bind-mounts the volumes, starts the container's process in its own
process group with its output in the log file, forwards SIGTERM/SIGINT to that group, and records
the exit, with the termination message, in `exit.json`.

The shim is detached from the agent, so restarting the agent neither kills nor duplicates
containers: the new agent re-reads `started.json` / `exit.json` and carries on.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from ganforge.local.node.security import ProcessSecurity, apply_before_exec, read_only_remounts
from ganforge.local.node.termination import POLICY_FILE, termination_message
from ganforge.local.state_files import write_json_atomic


@dataclass
class MountSpec:
    source: str
    target: str
    read_only: bool = False
    is_file: bool = False


@dataclass
class ContainerSpec:
    argv: list[str]
    env: dict[str, str]
    log_path: str
    working_dir: str | None = None
    mounts: list[MountSpec] = field(default_factory=list)
    hostname: str | None = None
    termination_message_file: str | None = None
    """Host side of the container's terminationMessagePath."""
    termination_message_policy: str = POLICY_FILE
    security: dict[str, Any] = field(default_factory=dict)
    """ProcessSecurity fields: what the runtime enforces of the container's securityContext."""
    memory_limit_bytes: int | None = None
    """resources.limits.memory: the agent starts the shim, and so the container, in a memory
    cgroup with this limit (`ganforge/local/node/memory.py`)."""

    def write(self, directory: Path) -> None:
        write_json_atomic(directory / "spec.json", asdict(self))

    @classmethod
    def read(cls, directory: Path) -> ContainerSpec:
        raw = json.loads((directory / "spec.json").read_text())
        raw["mounts"] = [MountSpec(**mount) for mount in raw["mounts"]]
        return cls(**raw)


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _mount(spec: MountSpec) -> None:
    target = Path(spec.target)
    # Mount points must exist; in this private mount namespace creating them is harmless, but the
    # directory entry itself lands on the shared filesystem, which docs/local-cluster.md notes.
    if spec.is_file:
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.touch()
    else:
        target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--bind", spec.source, spec.target], check=True, capture_output=True)
    if spec.read_only:
        subprocess.run(["mount", "-o", "remount,bind,ro", spec.target], check=True, capture_output=True)


class HostnameError(RuntimeError):
    pass


# <sched.h>; Python 3.11 has no os.unshare.
CLONE_NEWUTS = 0x04000000


def _set_hostname(hostname: str) -> None:
    """Give this process (and so the container) a UTS namespace of its own, named `hostname`.

    Unsharing here rather than in the launch command means sethostname can never reach the host's
    namespace, whatever started the shim.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWUTS) != 0:
        raise HostnameError(f"unshare(CLONE_NEWUTS): {os.strerror(ctypes.get_errno())}")
    try:
        socket.sethostname(hostname)
    except OSError as error:
        raise HostnameError(f"sethostname({hostname!r}): {error}") from error


def _record_failure(directory: Path, reason: str, message: str, exit_code: int = 128) -> int:
    write_json_atomic(
        directory / "exit.json",
        {"exitCode": exit_code, "signal": None, "reason": reason, "message": message, "finishedAt": now_rfc3339()},
    )
    return exit_code


def run(directory: Path) -> int:
    spec = ContainerSpec.read(directory)
    if spec.hostname:
        try:
            _set_hostname(spec.hostname)
        except HostnameError as error:
            return _record_failure(directory, "CreateContainerError", f"setting the hostname failed: {error}")
    try:
        for mount in spec.mounts:
            _mount(mount)
    except subprocess.CalledProcessError as error:
        detail = error.stderr.decode(errors="replace").strip() if error.stderr else ""
        return _record_failure(directory, "CreateContainerError", f"mounting volumes failed: {detail}")

    security = ProcessSecurity(**spec.security)
    remounts = []
    if security.read_only_root:
        volume_targets = [mount.target for mount in spec.mounts]
        remounts = read_only_remounts(Path("/proc/self/mountinfo").read_text(), volume_targets)
    refusal = directory / "security-error"

    def secure() -> None:
        # Runs in the child between fork and exec; subprocess reports only that it failed, so the
        # reason goes to a file first.
        try:
            apply_before_exec(security, remounts)
        except OSError as error:
            refusal.write_text(str(error))
            raise

    log = open(spec.log_path, "ab", buffering=0)  # noqa: SIM115 - inherited by the child
    try:
        child = subprocess.Popen(
            spec.argv,
            env=spec.env,
            cwd=spec.working_dir or "/",
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=0,
            preexec_fn=secure,  # safe: the shim has no threads
        )
    except subprocess.SubprocessError:
        reason = refusal.read_text() if refusal.exists() else "unknown"
        return _record_failure(directory, "StartError", f"applying the securityContext failed: {reason}")
    except (OSError, ValueError) as error:
        return _record_failure(directory, "StartError", f"cannot start {spec.argv[0]!r}: {error}")
    finally:
        log.close()

    def forward(signum: int, _frame: FrameType | None) -> None:
        try:
            os.killpg(child.pid, signum)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    write_json_atomic(
        directory / "started.json",
        {"pid": child.pid, "shimPid": os.getpid(), "startedAt": now_rfc3339()},
    )
    returncode = child.wait()
    # Reap what the container left in its group so nothing outlives the container.
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    exit_code = returncode if returncode >= 0 else 128 - returncode
    message_file = Path(spec.termination_message_file) if spec.termination_message_file else None
    write_json_atomic(
        directory / "exit.json",
        {
            "exitCode": exit_code,
            "signal": -returncode if returncode < 0 else None,
            "reason": "Completed" if exit_code == 0 else "Error",
            "message": termination_message(message_file, spec.termination_message_policy, exit_code,
                                           Path(spec.log_path)),
            "finishedAt": now_rfc3339(),
        },
    )
    return 0


def main() -> None:
    if len(sys.argv) != 2:
        print("usage: python -m ganforge.local.node.shim CONTAINER_DIR", file=sys.stderr)
        sys.exit(2)
    sys.exit(run(Path(sys.argv[1])))


if __name__ == "__main__":
    main()
