"""Preempting a 2-rank CPU run with a real SIGTERM and resuming it gives bitwise the same result as
never stopping."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import torch

from ganforge.api.exit_codes import ExitCode
from ganforge.trainer.checkpoint import checkpoint_name
from tests.integration.trainer.launch import (
    Gang,
    assert_identical,
    load_checkpoint,
    read_progress,
    tiny_spec,
    write_spec,
)

TOTAL_KIMG = 1.92  # 120 steps of 16 images


def test_sigterm_then_resume_is_bitwise_identical(tmp_path: Path, cache_dir: Path) -> None:
    # With adaptive augmentation: its probability is state every rank must resume identically.
    augment = {"policy": ["translation", "cutout"], "adaptive": {"target": 0.3, "speedKimg": 0.5}}
    config = write_spec(tmp_path / "job.yaml", tiny_spec(workers=2, total_kimg=TOTAL_KIMG,
                                                         training={"augment": augment}))

    straight = Gang(config, tmp_path / "straight", 2, cache_dir)
    assert straight.wait() == [0, 0], straight.output()

    interrupted = Gang(config, tmp_path / "resumed", 2, cache_dir)
    interrupted.wait_for(lambda: (read_progress(tmp_path / "resumed") or {}).get("step", 0) >= 30)
    # Only rank 1 gets the signal: the flag travels to rank 0 through the per-step all_reduce.
    interrupted.procs[1].send_signal(signal.SIGTERM)
    codes = interrupted.wait()
    assert codes == [ExitCode.PREEMPTED, ExitCode.PREEMPTED], interrupted.output()
    progress = read_progress(tmp_path / "resumed")
    assert progress is not None and progress["state"] == "preempted"
    stopped_nimg = round(progress["kimg"] * 1000)
    assert 30 * 16 <= stopped_nimg < TOTAL_KIMG * 1000
    emergency = load_checkpoint(tmp_path / "resumed" / "checkpoints" / checkpoint_name(stopped_nimg))
    assert emergency["progress"]["nimg"] == stopped_nimg
    assert len(emergency["ranks"]) == 2
    assert not torch.equal(emergency["ranks"][0]["rng"]["torch"], emergency["ranks"][1]["rng"]["torch"])

    resumed = Gang(config, tmp_path / "resumed", 2, cache_dir)
    assert resumed.wait() == [0, 0], resumed.output()
    emergency_dir = tmp_path / "resumed" / "checkpoints" / checkpoint_name(stopped_nimg)
    assert f"resuming from {emergency_dir}" in resumed.full_output()

    final = checkpoint_name(round(TOTAL_KIMG * 1000))
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / final)
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / final)
    for key in ("G_ema", "G", "D", "opt_g", "opt_d", "scaler_g", "scaler_d", "progress", "ranks"):
        assert_identical(a[key], b[key], key)
    assert a["progress"]["step"] == 120
    stats = [json.loads(line) for line in (tmp_path / "straight" / "stats.jsonl").read_text().splitlines()]
    assert max(s["augment/probability"] for s in stats) > 0, "the augmentation probability never moved"
    # The manifest says what made the checkpoint: the data it saw and the software that wrote it.
    manifest = json.loads((tmp_path / "resumed" / "checkpoints" / final / "manifest.json").read_text())
    assert len(manifest["datasetHash"]) == 16
    assert manifest["versions"]["torch"] == torch.__version__ and manifest["versions"]["ganforge"]
