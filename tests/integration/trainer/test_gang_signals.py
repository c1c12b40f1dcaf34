"""What one rank learns about the others outside the step's all_reduce.

A SIGTERM to rank 1 while rank 0 evaluates alone must still stop the gang after one step, with an
emergency checkpoint, long before the grace deadline; and a failure on rank 0 alone must end the
other ranks within seconds, not after the collective timeout."""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import pytest

from ganforge.api.exit_codes import ExitCode
from ganforge.trainer.checkpoint import checkpoint_name
from tests.integration.trainer.launch import Gang, read_progress, tiny_spec, write_spec


def test_sigterm_to_another_rank_interrupts_rank_0s_evaluation(tmp_path: Path, cache_dir: Path) -> None:
    # EfficientNet-Lite0 over 50k samples: minutes of work for rank 0 alone on a CPU (64 px input
    # keeps one batch, the unit of interruption, near a second here).
    spec = tiny_spec(workers=2, total_kimg=100.0, evaluation={
        "metrics": ["fd"], "featureExtractors": ["effnetlite0"], "effnetResolution": 64, "numSamples": 50000,
        "intervalKimg": 0.16, "atStart": False})
    config = write_spec(tmp_path / "job.yaml", spec)
    gang = Gang(config, tmp_path / "run", 2, cache_dir, extra=["--grace-seconds", "60"])
    gang.wait_for(lambda: "evaluating at kimg 0.16" in gang.logs[0].read_text(errors="replace"), timeout=240)
    time.sleep(1.0)  # rank 1 has entered the next step's all_reduce and waits for rank 0
    gang.procs[1].send_signal(signal.SIGTERM)
    # Well inside the 60 s grace: an evaluation that ignored the signal would run into it and fail the wait.
    codes = gang.wait(timeout=20)
    assert codes == [ExitCode.PREEMPTED, ExitCode.PREEMPTED], gang.output()
    assert "evaluation at kimg 0.16 interrupted" in gang.logs[0].read_text(errors="replace")
    progress = read_progress(tmp_path / "run")
    assert progress is not None and progress["state"] == "preempted"
    # One step after the evaluation's step (10 steps of 16 images), not a checkpoint interval later.
    assert round(progress["kimg"] * 1000) == 11 * 16, progress
    assert (tmp_path / "run" / "checkpoints" / checkpoint_name(11 * 16) / "manifest.json").is_file()


def test_sigterm_during_the_final_evaluation_keeps_the_final_checkpoint_and_the_next_gang_finishes(
        tmp_path: Path, cache_dir: Path) -> None:
    # Training ends at kimg 0.32; only the final evaluation runs, long enough to be interrupted.
    evaluation = {"metrics": ["fd"], "featureExtractors": ["effnetlite0"], "effnetResolution": 64,
                  "numSamples": 50000, "intervalKimg": 100.0, "atStart": False}
    config = write_spec(tmp_path / "job.yaml", tiny_spec(workers=2, total_kimg=0.32, evaluation=evaluation))
    gang = Gang(config, tmp_path / "run", 2, cache_dir, extra=["--grace-seconds", "60"])
    gang.wait_for(lambda: "evaluating at kimg 0.32" in gang.logs[0].read_text(errors="replace"), timeout=240)
    time.sleep(1.0)
    gang.procs[1].send_signal(signal.SIGTERM)
    # Preempted, not finished and not failed: the job must neither lose the evaluation nor count a failure.
    codes = gang.wait(timeout=20)
    assert codes == [ExitCode.PREEMPTED, ExitCode.PREEMPTED], gang.output()
    assert "preempted after the final checkpoint" in gang.logs[0].read_text(errors="replace")
    progress = read_progress(tmp_path / "run")
    assert progress is not None and progress["state"] == "preempted" and round(progress["kimg"] * 1000) == 320
    assert (tmp_path / "run" / "checkpoints" / checkpoint_name(320) / "manifest.json").is_file()

    # The next gang (with a shorter evaluation: evaluation settings may change mid-run) resumes at
    # the end, trains no step, evaluates and finishes.
    evaluation["numSamples"] = 500
    write_spec(config, tiny_spec(workers=2, total_kimg=0.32, evaluation=evaluation))
    again = Gang(config, tmp_path / "run", 2, cache_dir)
    assert again.wait(timeout=240) == [ExitCode.SUCCESS, ExitCode.SUCCESS], again.output()
    progress = read_progress(tmp_path / "run")
    assert progress is not None and progress["state"] == "finished" and progress["step"] == 20, progress
    assert "fd_effnetlite0" in progress["metrics"], progress


def _replace_with_a_file(path: Path) -> None:
    shutil.rmtree(path)
    path.write_text("not a directory")


def _replace_with_a_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


# What only rank 0 writes, and how its disk goes bad under it: the sample grids, the stats log, and
# (written in the step, not in the background) the checkpoints.
# (Rank 0's exit code says which; the others exit as a distributed error naming it.)
RANK_0_ONLY_WRITES = {
    "sample grids": ({"training": {"sampleIntervalKimg": 0.32}}, "samples", _replace_with_a_file,
                     ExitCode.INTERNAL_ERROR),
    "stats": ({}, "stats.jsonl", _replace_with_a_directory, ExitCode.INTERNAL_ERROR),
    "synchronous checkpoint": ({"checkpoint": {"intervalKimg": 0.32, "background": False}}, "checkpoints",
                               _replace_with_a_file, ExitCode.CHECKPOINT_STORAGE_ERROR),
}


@pytest.mark.parametrize("what", RANK_0_ONLY_WRITES)
def test_a_failure_on_rank_0_alone_ends_every_rank_within_seconds(tmp_path: Path, cache_dir: Path, what: str) -> None:
    sections, target, break_it, rank_0_code = RANK_0_ONLY_WRITES[what]
    spec = tiny_spec(workers=2, total_kimg=100.0, **sections)
    config = write_spec(tmp_path / "job.yaml", spec)
    gang = Gang(config, tmp_path / "run", 2, cache_dir)
    gang.wait_for(lambda: (read_progress(tmp_path / "run") or {}).get("step", 0) >= 2)
    break_it(tmp_path / "run" / target)
    # Within a minute, not the 30 min collective timeout: the wait fails otherwise.
    codes = gang.wait(timeout=60)
    assert codes[0] == rank_0_code and codes[1] == ExitCode.DISTRIBUTED_ERROR, gang.output()
    assert f"rank 0 failed with exit code {int(rank_0_code)}" in gang.logs[1].read_text(errors="replace"), gang.output()
