"""Word among a gang's ranks outside the collectives: a stop request or a fatal error reaches every
rank within a second.

In-band flags (the control slots of the step's all_reduce) travel only when every rank reaches the
step. Two things cannot wait for that: a SIGTERM to one rank while rank 0 evaluates or draws
samples alone (the others sit in the next all_reduce, so rank 0 would finish its minutes of work
and the signalled rank would meet its grace deadline without an emergency checkpoint), and a rank
that dies of an error while its peers wait in a collective (NCCL waits out its timeout, 30 minutes
by default). Both go through the rendezvous store (the TCPStore at MASTER_ADDR:MASTER_PORT that
torchrun or rank 0 hosts), on a connection of this module's own, polled by a watcher thread.

A peer's fatal error ends this rank as DISTRIBUTED_ERROR: through the main thread when it is at a
check (between steps, between evaluation batches), or, when it is stuck in a collective, by the
watcher after a short grace. The failing rank's own exit code is the cause the operator reports.
"""

from __future__ import annotations

import datetime
import logging
import os
import threading
import time
from collections.abc import Callable

from torch.distributed import PrefixStore, Store, TCPStore  # type: ignore[attr-defined]

from ganforge.api.exit_codes import ExitCode
from ganforge.trainer.preemption import exit_now

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
# How long a rank that learned of a peer's failure waits for its main thread to leave cleanly.
FATAL_GRACE_SECONDS = 5.0
# How long a failing rank waits for its peers to read its failure (rank 0 hosts the store: once it
# exits, nothing more can be read).
ACK_SECONDS = 3.0


class GangChannel:
    def __init__(self, store: Store | None, rank: int, world_size: int = 1, poll_seconds: float = POLL_SECONDS,
                 fatal_grace_seconds: float = FATAL_GRACE_SECONDS) -> None:
        self._store = store
        self.rank = rank
        self.world_size = world_size
        self.poll_seconds = poll_seconds
        self.fatal_grace_seconds = fatal_grace_seconds
        self._lock = threading.Lock()  # one user of the store connection at a time
        self._closed = threading.Event()
        self._failing = False  # this rank is itself leaving with an error: peers' errors are moot
        self.peer_stop = False
        self.peer_fatal: str | None = None
        self._watcher: threading.Thread | None = None

    @classmethod
    def connect(cls, rank: int, world_size: int) -> GangChannel:
        """A channel on the rendezvous store; a silent one for a single process."""
        if world_size == 1:
            return cls(None, rank, world_size)
        host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
        try:
            client = TCPStore(host, port, is_master=False, timeout=datetime.timedelta(seconds=10),
                                   wait_for_workers=False)
        except (RuntimeError, ValueError) as error:
            log.warning("no side channel to the other ranks (store at %s:%d: %s): a stop or failure reaches "
                        "them only at the next step", host, port, error)
            return cls(None, rank, world_size)
        # torchrun's agent keeps its store across in-place restarts: keys are per attempt.
        prefix = f"ganforge/attempt-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
        return cls(PrefixStore(prefix, client), rank, world_size)

    def start(self) -> GangChannel:
        if self._store is not None:
            self._watcher = threading.Thread(target=self._watch, name="gang-channel", daemon=True)
            self._watcher.start()
        return self

    def close(self) -> None:
        """The last thing a rank does: after it, a peer's failure no longer ends the process."""
        self._closed.set()
        if self._watcher is not None:
            self._watcher.join(timeout=2 * self.poll_seconds + 1)

    # -- this rank speaks -------------------------------------------------------------------

    def announce_stop(self) -> None:
        """This rank was asked to stop (SIGTERM): every rank should reach the next step soon."""
        self._call(lambda store: store.set("stop", str(self.rank)))

    def announce_failure(self, code: int, message: str) -> None:
        """This rank is leaving with an error; the others stop waiting for it. Returns once every
        peer has read it (or after ACK_SECONDS), so that the store outlives the news."""
        if self._failing or self.peer_fatal is not None:
            return  # already said, or a peer's failure is what ends this rank
        self._failing = True
        self._call(lambda store: store.compare_set("fatal", "", f"{self.rank}:{code}:{message[:500]}"))
        deadline = time.monotonic() + ACK_SECONDS
        acknowledged = 0
        while self._store is not None and acknowledged < self.world_size - 1 and time.monotonic() < deadline:
            time.sleep(self.poll_seconds / 2)
            try:
                with self._lock:
                    acknowledged = self._store.add("fatal-read", 0)
            except (RuntimeError, ValueError):
                return

    # -- what the peers said ----------------------------------------------------------------

    @property
    def interrupted(self) -> bool:
        """A peer wants the gang to stop, or failed: work that only this rank is doing should end."""
        return self.peer_stop or self.peer_fatal is not None

    def _call(self, action: Callable[[Store], object]) -> None:
        if self._store is None:
            return
        try:
            with self._lock:
                action(self._store)
        except (RuntimeError, ValueError) as error:
            log.warning("side channel to the other ranks failed: %s", error)

    def _watch(self) -> None:
        assert self._store is not None
        while not self._closed.wait(self.poll_seconds):
            try:
                with self._lock:
                    stop = self._store.check(["stop"])
                    fatal = self._store.get("fatal").decode() if self._store.check(["fatal"]) else ""
            except (RuntimeError, ValueError):
                continue  # the store's host left (the run is ending, or rank 0 died): collectives will say
            if stop and not self.peer_stop:
                self.peer_stop = True
                log.warning("another rank was asked to stop: ending this rank's own work at once")
            if fatal and self.peer_fatal is None and not self._failing:
                rank, code, message = fatal.split(":", 2)
                if int(rank) == self.rank:
                    continue
                self.peer_fatal = f"rank {rank} failed with exit code {code}: {message}"
                log.error("%s; leaving too", self.peer_fatal)
                self._call(lambda store: store.add("fatal-read", 1))
                threading.Thread(target=self._exit_if_stuck, name="gang-channel-exit", daemon=True).start()

    def _exit_if_stuck(self) -> None:
        """The main thread leaves at its next check; if a collective holds it, leave from here."""
        if self._closed.wait(self.fatal_grace_seconds):
            return  # the process got through its teardown
        exit_now(f"still waiting {self.fatal_grace_seconds:.0f}s after a peer's failure (stuck in a collective)",
                 ExitCode.DISTRIBUTED_ERROR)
