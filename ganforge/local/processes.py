"""Child processes that cannot outlive the cluster that started them.

Every process ganforge's local cluster starts carries an environment marker naming its cluster.
That makes "did we leave anything behind?" an exact question: scan /proc for the marker. The
marker is inherited by grandchildren, so it also finds what a pod's process forked.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

MARKER_ENV = "GANFORGE_LOCAL_CLUSTER"



def die_with_parent(argv: Sequence[str]) -> list[str]:
    """Prefix `argv` so the kernel SIGKILLs it when the thread that started it dies.

    If the Python process that owns the cluster is SIGKILLed, its children go with it, so an
    interrupted test run leaks nothing. util-linux's setpriv sets the parent-death signal and
    execs, which avoids running Python code between fork and exec.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise RuntimeError("setpriv (util-linux) is required to start cluster processes")
    return [setpriv, "--pdeathsig", "KILL", "--", *argv]


@dataclass(eq=False)
class ManagedProcess:
    """A long-running child in its own process group, with its output in a log file."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str]
    cwd: Path | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            die_with_parent(self.argv),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(self.env),
            cwd=self.cwd,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self, grace_seconds: float = 10.0) -> None:
        """SIGTERM the whole process group, then SIGKILL whatever is left after the grace."""
        if self.popen is not None and self.popen.poll() is None:
            _signal_group(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace_seconds)
            except subprocess.TimeoutExpired:
                _signal_group(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)
        if self.popen is not None:
            # The leader may be gone while a forked member of its group still runs.
            _signal_group(self.popen.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def processes_with_marker(value: str, also: dict[str, str] | None = None) -> list[int]:
    """PIDs of live processes whose environment has MARKER_ENV=value (zombies excluded).

    `also` narrows the match to processes that carry these variables too (a node's name).
    """
    needles = {f"{MARKER_ENV}={value}".encode()}
    needles |= {f"{key}={val}".encode() for key, val in (also or {}).items()}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if state != "Z" and needles <= set(environ.split(b"\0")):
            found.append(int(entry.name))
    return found


def kill_marked(value: str, timeout: float = 10.0, also: dict[str, str] | None = None) -> list[int]:
    """SIGKILL every process carrying the marker; returns the PIDs that had to be killed."""
    leaked = processes_with_marker(value, also)
    for pid in leaked:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while processes_with_marker(value, also) and time.monotonic() < deadline:
        time.sleep(0.1)
    return leaked
