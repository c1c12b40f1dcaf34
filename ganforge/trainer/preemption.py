"""SIGTERM handling for spot instances.

The first SIGTERM (or SIGINT) only sets a flag. The loop folds the flag into its per-step
all_reduce, so every rank stops after the same step, and rank 0 writes a synchronous emergency
checkpoint. A second signal, or the grace deadline (keep it below the pod's
terminationGracePeriodSeconds), exits at once with PREEMPTED_NO_CHECKPOINT: checkpoints are atomic,
so whatever was half-written is invisible and the newest complete one is used on restart.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

from ganforge.api.exit_codes import ExitCode

log = logging.getLogger(__name__)

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _hard_exit(reason: str) -> None:
    log.error("%s; exiting with %d (%s)", reason, ExitCode.PREEMPTED_NO_CHECKPOINT,
              ExitCode.PREEMPTED_NO_CHECKPOINT.name)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(ExitCode.PREEMPTED_NO_CHECKPOINT)


class PreemptionHandler:
    def __init__(self, grace_seconds: float) -> None:
        self.grace_seconds = grace_seconds
        self.requested_at: float | None = None
        self.signal_name = ""
        self._previous: dict[int, Any] = {}
        self._timer: threading.Timer | None = None

    @property
    def requested(self) -> bool:
        return self.requested_at is not None

    def install(self) -> PreemptionHandler:
        if threading.current_thread() is threading.main_thread():
            for sig in HANDLED_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
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
        if self.grace_seconds > 0:
            self._timer = threading.Timer(self.grace_seconds, _hard_exit, args=("preemption deadline passed",))
            self._timer.daemon = True
            self._timer.start()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested_at is not None:
            _hard_exit(f"second signal ({name})")
        self.request(name)
