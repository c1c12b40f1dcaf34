"""The gang's side channel on a real TCPStore: stop requests and failures reach the other ranks,
and a rank stuck in a collective (here: a main thread that never returns) still leaves."""

from __future__ import annotations

import datetime
import subprocess
import sys
import textwrap
import time

import pytest
from torch.distributed import TCPStore  # type: ignore[attr-defined]

from ganforge.api.exit_codes import ExitCode
from ganforge.local.control_plane import free_port
from ganforge.trainer.gang_channel import GangChannel


@pytest.fixture
def store_port(monkeypatch: pytest.MonkeyPatch) -> tuple[TCPStore, int]:
    port = free_port()
    server = TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False,
                      timeout=datetime.timedelta(seconds=10))
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    return server, port


def _until(predicate: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_a_stop_and_a_failure_reach_the_other_ranks(store_port: tuple[TCPStore, int]) -> None:
    ranks = [GangChannel.connect(rank, 3).start() for rank in range(3)]
    try:
        assert not any(channel.interrupted for channel in ranks)
        ranks[2].announce_stop()
        assert _until(lambda: ranks[0].peer_stop and ranks[1].peer_stop, 2.0)
        started = time.monotonic()
        ranks[1].announce_failure(int(ExitCode.CHECKPOINT_STORAGE_ERROR), "disk full")
        # The failing rank returns once both peers have read it, well before its 3 s limit.
        assert time.monotonic() - started < 2.0
        assert ranks[0].peer_fatal == "rank 1 failed with exit code 6: disk full"
        assert ranks[2].peer_fatal == ranks[0].peer_fatal and ranks[1].peer_fatal is None
    finally:
        for channel in ranks:
            channel.close()


def test_a_single_process_has_a_silent_channel() -> None:
    channel = GangChannel.connect(0, 1).start()
    channel.announce_stop()
    channel.announce_failure(1, "x")
    assert not channel.interrupted
    channel.close()


def test_a_rank_stuck_when_a_peer_fails_exits_as_a_distributed_error(store_port: tuple[TCPStore, int]) -> None:
    _, port = store_port
    stuck = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import os, time
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="{port}")
        from ganforge.trainer.gang_channel import GangChannel
        GangChannel.connect(1, 2).start()
        print("ready", flush=True)
        time.sleep(600)  # a main thread that never comes back (an NCCL collective waiting for its timeout)
        """)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert stuck.stdout is not None and stuck.stdout.readline().strip() == "ready"
        failing = GangChannel.connect(0, 2).start()
        failed_at = time.monotonic()
        failing.announce_failure(int(ExitCode.NON_FINITE_LOSS), "loss is nan")
        code = stuck.wait(timeout=15)
        assert code == ExitCode.DISTRIBUTED_ERROR
        # Its poll, then FATAL_GRACE_SECONDS (5 s) for the main thread to leave on its own.
        assert time.monotonic() - failed_at < 10
        assert "rank 0 failed with exit code 5: loss is nan" in stuck.stdout.read()
        failing.close()
    finally:
        stuck.kill()
        stuck.wait()
