"""Every loss, regulariser and architecture runs through the real loop (tiny model, fake data)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from ganforge.api.exit_codes import ExitCode
from ganforge.trainer import cli
from tests.integration.trainer.launch import assert_identical, load_checkpoint, tiny_spec, write_spec


@pytest.mark.parametrize(
    "model, training",
    [
        ({"architecture": "sngan-resnet", "loss": "hinge", "regularization": {"r1Gamma": 1.0}}, {}),
        ({"architecture": "dcgan", "loss": "wgan-gp"}, {"dStepsPerG": 2}),
        ({"architecture": "dcgan", "regularization": {"spectralNorm": True}}, {"precision": "bf16"}),
        # Inductor's C++ backend: the compiled modules share weights with the eager ones the
        # optimizers, EMA and checkpoints see.
        ({"architecture": "dcgan"}, {"compile": True, "channelsLast": True}),
    ],
    ids=["sngan-hinge-r1", "dcgan-wgangp-2dsteps", "dcgan-sn-bf16", "dcgan-compile-channels-last"],
)
def test_variant_trains_and_checkpoints(tmp_path: Path, cache_dir: Path, model: dict[str, Any],
                                        training: dict[str, Any]) -> None:
    spec = tiny_spec(workers=1, total_kimg=0.32, model=model, training=training)
    spec["model"]["width"] = 4
    torch._dynamo.reset()  # counters below count this run's graphs only
    code = cli.main(["--config", str(write_spec(tmp_path / "job.yaml", spec)), "--run-dir", str(tmp_path / "run"),
                     "--cache-dir", str(cache_dir), "--threads", "1", "--no-tensorboard", "--device", "cpu"])
    assert code == ExitCode.SUCCESS
    stats = [json.loads(line) for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    assert stats and all(abs(s["loss/D"]) < 1e6 and s["grad_norm/D"] > 0 for s in stats)
    images_per_step = 16 * training.get("dStepsPerG", 1)
    assert stats[-1]["step"] == 320 // images_per_step
    assert (tmp_path / "run" / "checkpoints" / "ckpt-000000000320" / "manifest.json").exists()
    if training.get("compile"):
        # G and D really went through dynamo (a silent fallback to eager would compile nothing).
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 2, dict(torch._dynamo.utils.counters["stats"])


def test_channels_last_run_extended_after_finishing_is_bitwise_identical(tmp_path: Path, cache_dir: Path) -> None:
    """channels_last weights, their flat-buffer gradients and Adam moments survive a checkpoint
    round trip: stopping at 10 steps and extending to 20 equals 20 steps straight."""
    def run(run_dir: Path, total_kimg: float) -> None:
        spec = tiny_spec(workers=1, total_kimg=total_kimg, training={"channelsLast": True})
        config = write_spec(tmp_path / f"job-{total_kimg}.yaml", spec)
        code = cli.main(["--config", str(config), "--run-dir", str(run_dir), "--cache-dir", str(cache_dir),
                         "--threads", "1", "--no-tensorboard", "--device", "cpu"])
        assert code == ExitCode.SUCCESS

    run(tmp_path / "straight", 0.32)
    run(tmp_path / "extended", 0.16)
    run(tmp_path / "extended", 0.32)
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "ckpt-000000000320")
    b = load_checkpoint(tmp_path / "extended" / "checkpoints" / "ckpt-000000000320")
    assert b["progress"]["step"] == 20
    assert a["G"]["net.0.weight"].is_contiguous(memory_format=torch.channels_last)
    for key in ("G_ema", "G", "D", "opt_g", "opt_d", "progress"):
        assert_identical(a[key], b[key], key)
