"""SIGTERM handling for spot instances.

The first SIGTERM (or SIGINT) only sets a flag. The loop folds the flag into its per-step
all_reduce, so every rank stops after the same step, and rank 0 writes a synchronous emergency
checkpoint. A second signal, or the grace deadline (keep it below the pod's
terminationGracePeriodSeconds), exits at once with PREEMPTED_NO_CHECKPOINT: checkpoints are atomic,
so whatever was half-written is invisible and the newest complete one is used on restart.

Signals are handled on a watcher thread, not in a Python signal handler. Python runs its handlers
on the main thread between bytecodes, and a main thread waiting in a collective for a peer that
is gone (its node reclaimed first) never gets back to bytecode: the signal would be noticed only
when the collective times out, minutes later. The C-level handler still writes the signal number
to a wakeup pipe, and the watcher thread reads it at once.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, NoReturn

from ganforge.api.exit_codes import ExitCode

log = logging.getLogger(__name__)

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def exit_now(reason: str, code: ExitCode) -> NoReturn:
    """Leave at once, from any thread, with `code`: what a rank does when its main thread cannot
    (held by a collective). Checkpoints are atomic, so nothing half-written is ever used."""
    log.error("%s; exiting with %d (%s)", reason, code, code.name)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _hard_exit(reason: str) -> None:
    exit_now(reason, ExitCode.PREEMPTED_NO_CHECKPOINT)


def _noticed_by_the_watcher(signum: int, frame: FrameType | None) -> None:
    """Replaces the default action (terminate, or KeyboardInterrupt for SIGINT); the watcher
    thread has already acted on the signal through the wakeup pipe."""


class PreemptionHandler:
    def __init__(self, grace_seconds: float) -> None:
        self.grace_seconds = grace_seconds
        self.requested_at: float | None = None
        self.signal_name = ""
        self._previous: dict[int, Any] = {}
        self._previous_wakeup_fd = -1
        self._pipe: tuple[int, int] | None = None
        self._watcher: threading.Thread | None = None
        self._timer: threading.Timer | None = None
        # Called (on the signal watcher thread) when a stop is first requested: tells the other ranks.
        self.on_request: Callable[[], None] | None = None

    @property
    def requested(self) -> bool:
        return self.requested_at is not None

    def install(self) -> PreemptionHandler:
        """Signals can only be routed from the main thread; elsewhere `request()` still works."""
        if threading.current_thread() is not threading.main_thread():
            return self
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)  # the C-level handler must never block
        self._pipe = (read_end, write_end)
        self._watcher = threading.Thread(target=self._watch, args=(read_end,), name="preemption-signals",
                                         daemon=True)
        self._watcher.start()
        self._previous_wakeup_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        for sig in HANDLED_SIGNALS:
            self._previous[sig] = signal.signal(sig, _noticed_by_the_watcher)
        return self

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
        if self._pipe is not None:
            signal.set_wakeup_fd(self._previous_wakeup_fd)
            read_end, write_end = self._pipe
            os.close(write_end)  # the watcher reads end-of-file and returns
            if self._watcher is not None:
                self._watcher.join(timeout=5)
            os.close(read_end)
            self._pipe = None
        if self._timer is not None:
            self._timer.cancel()

    def request(self, reason: str) -> None:
        """Also callable without a signal (e.g. a node-termination notice watcher)."""
        if self.requested_at is not None:
            return
        self.requested_at = time.monotonic()
        self.signal_name = reason
        log.warning("%s received: stopping at the next step and writing an emergency checkpoint "
                    "(deadline %.0fs)", reason, self.grace_seconds)
        if self.on_request is not None:
            self.on_request()
        if self.grace_seconds > 0:
            self._timer = threading.Timer(self.grace_seconds, _hard_exit, args=("preemption deadline passed",))
            self._timer.daemon = True
            self._timer.start()

    def _watch(self, read_end: int) -> None:
        while True:
            try:
                data = os.read(read_end, 64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum in HANDLED_SIGNALS:
                    self._on_signal(signum)

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.requested_at is not None:
            _hard_exit(f"second signal ({name})")
        self.request(name)
