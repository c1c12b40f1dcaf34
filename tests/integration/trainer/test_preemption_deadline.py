"""Preemption away from the step boundary.

A preempted rank whose peer is gone (stopped, as when its node was reclaimed first) is stuck in
the step's all_reduce. It must still leave within its grace period, or at once on a second signal,
with PREEMPTED_NO_CHECKPOINT, instead of waiting out the collective's timeout. A SIGTERM during
setup (here: training the domain classifier) stops the run after its first step."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ganforge.api.exit_codes import ExitCode
from ganforge.trainer.checkpoint import checkpoint_name
from tests.integration.trainer.launch import Gang, read_progress, tiny_spec, write_spec


@pytest.fixture
def hung_pair(tmp_path: Path, cache_dir: Path, request: pytest.FixtureRequest) -> Iterator[Gang]:
    """Two training ranks; rank 1 is frozen with SIGSTOP once training runs, so rank 0 blocks in
    its next all_reduce (whose timeout, 120 s, is far beyond what these tests wait)."""
    grace = request.param
    config = write_spec(tmp_path / "job.yaml", tiny_spec(workers=2, total_kimg=100.0))
    gang = Gang(config, tmp_path / "run", 2, cache_dir, extra=["--grace-seconds", str(grace)])
    try:
        gang.wait_for(lambda: (read_progress(tmp_path / "run") or {}).get("step", 0) >= 5)
        os.kill(gang.procs[1].pid, signal.SIGSTOP)
        time.sleep(1.0)  # rank 0 finishes its step and waits for rank 1's share
        yield gang
    finally:
        for proc in gang.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _wait_exit(gang: Gang, rank: int, within: float) -> int:
    try:
        return gang.procs[rank].wait(timeout=within)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"rank {rank} still running after {within}s:\n{gang.output()}") from None


@pytest.mark.parametrize("hung_pair", [3.0], indirect=True)
def test_grace_deadline_ends_a_rank_stuck_in_a_collective(hung_pair: Gang) -> None:
    os.kill(hung_pair.procs[0].pid, signal.SIGTERM)
    start = time.monotonic()
    code = _wait_exit(hung_pair, 0, within=20)
    assert code == ExitCode.PREEMPTED_NO_CHECKPOINT, hung_pair.output()
    assert time.monotonic() - start >= 2.5  # not before the grace period it was given
    log = hung_pair.full_output()
    assert "SIGTERM received: stopping at the next step" in log
    assert "preemption deadline passed; exiting with 76" in log


@pytest.mark.parametrize("hung_pair", [300.0], indirect=True)
def test_second_signal_ends_a_rank_stuck_in_a_collective_at_once(hung_pair: Gang) -> None:
    rank0 = hung_pair.procs[0]
    os.kill(rank0.pid, signal.SIGTERM)
    hung_pair.wait_for(lambda: "SIGTERM received" in hung_pair.logs[0].read_text(errors="replace"), timeout=10)
    assert rank0.poll() is None  # the first signal only asks to stop; the peer never answers
    os.kill(rank0.pid, signal.SIGINT)
    code = _wait_exit(hung_pair, 0, within=10)
    assert code == ExitCode.PREEMPTED_NO_CHECKPOINT, hung_pair.output()
    assert "second signal (SIGINT); exiting with 76" in hung_pair.full_output()


def _setup_in_progress(tmp_path: Path, grace: float) -> Gang:
    """One rank, signalled once its dataset is loaded and while it trains the domain classifier
    (about 10 s with an empty cache)."""
    spec = tiny_spec(workers=1, total_kimg=0.32, evaluation={
        "metrics": ["fd"], "featureExtractors": ["domain"], "numSamples": 256, "intervalKimg": 0})
    gang = Gang(write_spec(tmp_path / "job.yaml", spec), tmp_path / "run", 1, tmp_path / "empty-cache",
                extra=["--grace-seconds", str(grace)])
    gang.wait_for(lambda: "dataset fake://" in gang.logs[0].read_text(errors="replace"), timeout=60)
    gang.procs[0].send_signal(signal.SIGTERM)
    return gang


def test_sigterm_during_setup_stops_after_the_first_step(tmp_path: Path) -> None:
    gang = _setup_in_progress(tmp_path, grace=120)
    assert gang.wait(timeout=120) == [ExitCode.PREEMPTED], gang.output()
    log = gang.full_output()
    assert log.index("SIGTERM received") < log.index("trained the domain classifier") < log.index("training from")
    assert "all ranks stopped after step 1 (kimg 0.016)" in log
    assert (tmp_path / "run" / "checkpoints" / checkpoint_name(16) / "manifest.json").exists()


def test_grace_deadline_during_setup_exits_without_a_checkpoint(tmp_path: Path) -> None:
    gang = _setup_in_progress(tmp_path, grace=1)
    assert gang.wait(timeout=30) == [ExitCode.PREEMPTED_NO_CHECKPOINT], gang.output()
    log = gang.full_output()
    assert "preemption deadline passed" in log and "training from" not in log
    assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())
