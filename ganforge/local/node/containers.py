"""One run ("attempt") of one container: launch through the shim, observe, signal.

Everything about an attempt is in its directory, so a restarted agent can pick it up:
`launched.json` (shim pid), `started.json` (container pid), `exit.json` (how it ended), and
`termination-log`, the host side of the container's terminationMessagePath.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ganforge.local.node import memory
from ganforge.local.node.shim import ContainerSpec, now_rfc3339
from ganforge.local.state_files import read_json, write_json_atomic


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks), None if gone or a zombie.

    Comparing it guards against a recycled pid after an agent restart.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    if fields[0] == "Z":
        return None
    return int(fields[19])


@dataclass
class Attempt:
    directory: Path

    @property
    def number(self) -> int:
        return int(self.directory.name)

    def launched(self) -> dict[str, Any] | None:
        return read_json(self.directory / "launched.json")

    def started(self) -> dict[str, Any] | None:
        return read_json(self.directory / "started.json")

    @property
    def termination_log(self) -> Path:
        return self.directory / "termination-log"

    def create_termination_log(self) -> Path:
        """An empty file for this run: a bind mount needs its source, and each run starts blank."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.termination_log.write_bytes(b"")
        return self.termination_log

    def exit_record(self) -> dict[str, Any] | None:
        return read_json(self.directory / "exit.json")

    def shim_alive(self) -> bool:
        launched = self.launched()
        return launched is not None and process_start_time(launched["pid"]) == launched["startTime"]

    def finished(self) -> dict[str, Any] | None:
        """How the attempt ended, or None while it runs.

        A shim that vanished without writing exit.json was SIGKILLed with its container (grace
        period over, node reclaimed): report it as kubelet does, exit code 137.
        """
        record = self.exit_record()
        if record is None and self.launched() is not None and not self.shim_alive():
            record = {"exitCode": 137, "signal": 9, "reason": "Error", "message": "killed",
                      "finishedAt": now_rfc3339()}
            write_json_atomic(self.directory / "exit.json", record)
        if record is not None:
            record = self._settle_memory_cgroup(record)
        return record

    def _settle_memory_cgroup(self, record: dict[str, Any]) -> dict[str, Any]:
        """Once the attempt ended: a kill by the kernel for going over the memory limit makes its
        reason OOMKilled; then the attempt's group goes."""
        cgroup = memory.existing(self.directory)
        if cgroup is None:
            return record
        if record["exitCode"] != 0 and record.get("reason") == "Error" and cgroup.oom_kills():
            record = {**record, "reason": "OOMKilled"}
            write_json_atomic(self.directory / "exit.json", record)
        try:
            cgroup.remove()
        except OSError:
            pass  # a process of it still exiting: the next look removes it
        return record

    def launch(self, spec: ContainerSpec, netns: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        self.directory.mkdir(parents=True, exist_ok=True)
        spec.write(self.directory)
        # `ip netns exec` adds a private mount namespace and execs in place, so the pid recorded
        # below is the shim's. The shim makes its own UTS namespace.
        argv = ["ip", "netns", "exec", netns, sys.executable, "-m", "ganforge.local.node.shim", str(self.directory)]
        if spec.memory_limit_bytes is not None:
            try:
                cgroup = memory.create(self.directory, spec.memory_limit_bytes)
            except OSError as error:
                (self.directory / "memory-not-enforced").write_text(f"{error}\n")
            else:
                # The shell moves itself into the group, then becomes the shim: nothing of the
                # container is ever outside it.
                argv = ["sh", "-c", f'echo $$ > "{cgroup.procs}" && exec "$@"', "sh", *argv]
        with open(self.directory / "shim.log", "ab") as shim_log:
            # Detached (own session, no parent-death signal): containers survive an agent restart.
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL, stdout=shim_log, stderr=subprocess.STDOUT,
                env=env, start_new_session=True,
            )
        start_time = process_start_time(process.pid)
        write_json_atomic(self.directory / "launched.json", {"pid": process.pid, "startTime": start_time})
        return process

    def terminate(self) -> None:
        """SIGTERM via the shim, which forwards it to the container's process group."""
        launched = self.launched()
        if launched and self.shim_alive():
            _kill(launched["pid"], signal.SIGTERM)

    def kill(self) -> None:
        started, launched = self.started(), self.launched()
        if started:
            try:
                os.killpg(started["pid"], signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if launched and self.shim_alive():
            _kill(launched["pid"], signal.SIGKILL)


def _kill(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def attempts(container_dir: Path) -> list[Attempt]:
    if not container_dir.is_dir():
        return []
    numbered = [path for path in container_dir.iterdir() if path.name.isdigit()]
    return [Attempt(path) for path in sorted(numbered, key=lambda path: int(path.name))]
