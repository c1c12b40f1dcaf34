"""PreemptionHandler in-process: a signal is noticed by the watcher thread, and uninstall puts
back what was there. (A rank stuck in a collective: tests/integration/trainer/test_preemption_deadline.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from ganforge.api.exit_codes import ExitCode
from ganforge.trainer.preemption import PreemptionHandler
from tests.helpers import eventually


def test_sigterm_sets_the_flag_and_uninstall_restores_the_previous_handlers() -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    handler = PreemptionHandler(grace_seconds=0).install()
    try:
        assert not handler.requested
        os.kill(os.getpid(), signal.SIGTERM)
        eventually(lambda: handler.requested, 5, "the preemption flag")
        assert handler.signal_name == "SIGTERM"
    finally:
        handler.uninstall()
    assert {sig: signal.getsignal(sig) for sig in before} == before
    assert signal.set_wakeup_fd(-1) == -1  # no wakeup fd left behind


def test_request_without_a_signal_is_idempotent() -> None:
    handler = PreemptionHandler(grace_seconds=0)
    handler.request("node termination notice")
    first = handler.requested_at
    handler.request("SIGTERM")
    assert handler.requested and handler.requested_at == first
    assert handler.signal_name == "node termination notice"


_SLEEPER = """
import sys, time
from ganforge.trainer.preemption import PreemptionHandler
handler = PreemptionHandler(grace_seconds=float(sys.argv[1])).install()
print("ready", flush=True)
time.sleep(60)
"""


def _sleeper(grace: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", _SLEEPER, str(grace)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_second_signal_exits_at_once_with_preempted_no_checkpoint() -> None:
    proc = _sleeper(grace=300)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == ExitCode.PREEMPTED_NO_CHECKPOINT
    assert proc.stdout is not None and "second signal (SIGTERM)" in proc.stdout.read()


def test_grace_deadline_exits_with_preempted_no_checkpoint() -> None:
    proc = _sleeper(grace=0.5)
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == ExitCode.PREEMPTED_NO_CHECKPOINT
    assert time.monotonic() - start >= 0.4
    assert proc.stdout is not None and "preemption deadline passed" in proc.stdout.read()
