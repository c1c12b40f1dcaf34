"""Several ranks in one pod: `ganforge train` starts one process per GPU and supervises them.

Given PET_NPROC_PER_NODE > 1 (and no RANK), the pod's process numbers its ranks from PET_NNODES
and PET_NODE_RANK exactly as torchrun does (rank = node rank x processes + local rank), starts them,
forwards SIGTERM/SIGINT to every one, and exits with the one code that says what happened to the
pod. torchrun itself is not used because it reports every failure as exit code 1, and the operator
tells a preemption from a failure, and one failure from another, by the exit code.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

from ganforge.api import trainer_env
from ganforge.api.exit_codes import ExitCode
from ganforge.trainer.errors import ConfigError

log = logging.getLogger(__name__)

# After one rank failed, how long the others get to leave on their own (the gang channel tells
# them within a second; they may still be writing an emergency checkpoint) before they are killed.
PEER_EXIT_SECONDS = 60.0
_PR_SET_PDEATHSIG = 1

# Outcomes that are consequences, not causes: a rank that stopped because the gang stopped.
_CONSEQUENCES = {ExitCode.SUCCESS, ExitCode.PREEMPTED, ExitCode.PREEMPTED_NO_CHECKPOINT, ExitCode.DISTRIBUTED_ERROR}


@dataclass(frozen=True)
class PodLayout:
    processes: int
    nodes: int
    node_rank: int
    master_addr: str
    master_port: str

    def rank_environment(self, local_rank: int) -> dict[str, str]:
        return {"RANK": str(self.node_rank * self.processes + local_rank), "LOCAL_RANK": str(local_rank),
                "WORLD_SIZE": str(self.nodes * self.processes), "LOCAL_WORLD_SIZE": str(self.processes),
                "GROUP_RANK": str(self.node_rank), "MASTER_ADDR": self.master_addr, "MASTER_PORT": self.master_port}


def pod_layout(environ: dict[str, str]) -> PodLayout | None:
    """The pod's layout when it is to run several ranks; None when this process is the rank."""
    if environ.get("RANK") or int(environ.get(trainer_env.NPROC_PER_NODE, "1") or 1) <= 1:
        return None
    try:
        processes = int(environ[trainer_env.NPROC_PER_NODE])
        nodes = int(environ.get(trainer_env.NNODES, "1"))
        node_rank = int(environ.get(trainer_env.NODE_RANK, "0"))
    except ValueError as error:
        names = f"{trainer_env.NPROC_PER_NODE}/{trainer_env.NNODES}/{trainer_env.NODE_RANK}"
        raise ConfigError(f"{names}: {error}") from None
    if not 0 <= node_rank < nodes:
        raise ConfigError(f"{trainer_env.NODE_RANK}={node_rank} is outside {trainer_env.NNODES}={nodes}")
    address = environ.get(trainer_env.MASTER_ADDR) or environ.get("MASTER_ADDR") or "127.0.0.1"
    port = environ.get(trainer_env.MASTER_PORT) or environ.get("MASTER_PORT") or "29500"
    return PodLayout(processes, nodes, node_rank, address, port)


def pod_exit_code(codes: Sequence[int]) -> int:
    """One exit code for the pod from its ranks' (Popen returncodes; -N = killed by signal N).
    The cause wins over its consequences: a rank's own failure over its peers' DISTRIBUTED_ERROR,
    any failure over a preemption, a preemption without checkpoint over one with."""
    normalised = [128 - code if code < 0 else code for code in codes]
    causes = [code for code in normalised if code not in _CONSEQUENCES]
    if causes:
        return causes[0]
    for code in (ExitCode.DISTRIBUTED_ERROR, ExitCode.PREEMPTED_NO_CHECKPOINT, ExitCode.PREEMPTED):
        if code in normalised:
            return int(code)
    return int(ExitCode.SUCCESS)


def _die_with_parent() -> None:
    """In each child: the kernel sends SIGKILL if the supervisor dies (a rank never outlives its pod's
    main process, which is what the kubelet and the operator watch)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def run_pod(layout: PodLayout, argv: Sequence[str]) -> int:
    """Start the pod's ranks (`ganforge train ARGV` each), supervise them, return the pod's code."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format=f"%(asctime)s pod={layout.node_rank} %(levelname)s %(name)s: "
                            "%(message)s")
    children: list[subprocess.Popen[bytes]] = []
    for local_rank in range(layout.processes):
        env = {**os.environ, **layout.rank_environment(local_rank)}
        children.append(subprocess.Popen([sys.executable, "-m", "ganforge.cli", "train", *argv], env=env,
                                         preexec_fn=_die_with_parent))
    first = layout.node_rank * layout.processes
    log.info("started ranks %d-%d of %d on this pod", first, first + layout.processes - 1,
             layout.nodes * layout.processes)

    def forward(signum: int, frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return pod_exit_code(_wait_all(children))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _wait_all(children: list[subprocess.Popen[bytes]]) -> list[int]:
    failed_at: float | None = None
    while any(child.poll() is None for child in children):
        codes = [child.returncode for child in children if child.returncode is not None]
        if failed_at is None and any(code not in (0, ExitCode.PREEMPTED) for code in codes):
            failed_at = time.monotonic()
        if failed_at is not None and time.monotonic() - failed_at > PEER_EXIT_SECONDS:
            for child in children:
                if child.poll() is None:
                    log.error("rank process %d still running %.0fs after a peer failed; killing it", child.pid,
                              PEER_EXIT_SECONDS)
                    child.kill()
        time.sleep(0.1)
    return [int(child.returncode) for child in children]
