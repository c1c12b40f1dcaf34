"""`torchrun --nproc-per-node 2` runs the trainer locally: torchrun's own environment is enough,
its SIGTERM forwarding preempts both ranks at the same step, and a second torchrun resumes."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from ganforge.trainer.checkpoint import checkpoint_name
from tests.integration.trainer.launch import read_progress, tiny_spec, write_spec


def _torchrun(config: Path, run_dir: Path, cache_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
             "-m", "ganforge.cli", "train", "--config", str(config), "--run-dir", str(run_dir),
             "--cache-dir", str(cache_dir), "--no-tensorboard", "--threads", "1"],
            stdout=out, stderr=subprocess.STDOUT)


def test_torchrun_trains_preempts_and_resumes(tmp_path: Path, cache_dir: Path) -> None:
    run_dir = tmp_path / "run"
    config = write_spec(tmp_path / "job.yaml", tiny_spec(workers=2, total_kimg=100.0))
    first = _torchrun(config, run_dir, cache_dir, tmp_path / "first.log")
    deadline = time.monotonic() + 120
    while (read_progress(run_dir) or {}).get("step", 0) < 10:
        assert first.poll() is None, (tmp_path / "first.log").read_text()
        assert time.monotonic() < deadline, (tmp_path / "first.log").read_text()
        time.sleep(0.05)
    first.send_signal(signal.SIGTERM)  # torchrun forwards it to both ranks
    first.wait(timeout=60)
    log = (tmp_path / "first.log").read_text()
    stopped = dict(re.findall(r"rank=(\d) WARNING ganforge.trainer: preemption: all ranks stopped after step (\d+)",
                              log))
    assert sorted(stopped) == ["0", "1"] and stopped["0"] == stopped["1"], log
    progress = read_progress(run_dir)
    assert progress is not None and progress["state"] == "preempted", log
    stopped_nimg = round(progress["kimg"] * 1000)
    assert (run_dir / "checkpoints" / checkpoint_name(stopped_nimg) / "manifest.json").exists()

    # Same trajectory, a nearer end: totalKimg may change between restarts.
    write_spec(config, tiny_spec(workers=2, total_kimg=(stopped_nimg + 320) / 1000))
    second = _torchrun(config, run_dir, cache_dir, tmp_path / "second.log")
    assert second.wait(timeout=120) == 0, (tmp_path / "second.log").read_text()
    log = (tmp_path / "second.log").read_text()
    assert f"resuming from {run_dir / 'checkpoints' / checkpoint_name(stopped_nimg)}" in log
    assert "world size 2" in log
    final = read_progress(run_dir)
    assert final is not None and final["state"] == "finished"
    assert round(final["kimg"] * 1000) == stopped_nimg + 320
