"""Every loss, regulariser and architecture runs through the real loop (tiny model, fake data)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ganforge.api.exit_codes import ExitCode
from ganforge.trainer import cli
from tests.integration.trainer.launch import tiny_spec, write_spec


@pytest.mark.parametrize(
    "model, training",
    [
        ({"architecture": "sngan-resnet", "loss": "hinge", "regularization": {"r1Gamma": 1.0}}, {}),
        ({"architecture": "dcgan", "loss": "wgan-gp"}, {"dStepsPerG": 2}),
        ({"architecture": "dcgan", "regularization": {"spectralNorm": True}}, {"precision": "bf16"}),
    ],
    ids=["sngan-hinge-r1", "dcgan-wgangp-2dsteps", "dcgan-sn-bf16"],
)
def test_variant_trains_and_checkpoints(tmp_path: Path, cache_dir: Path, model: dict[str, Any],
                                        training: dict[str, Any]) -> None:
    spec = tiny_spec(workers=1, total_kimg=0.32, model=model, training=training)
    spec["model"]["width"] = 4
    code = cli.main(["--config", str(write_spec(tmp_path / "job.yaml", spec)), "--run-dir", str(tmp_path / "run"),
                     "--cache-dir", str(cache_dir), "--threads", "1", "--no-tensorboard", "--device", "cpu"])
    assert code == ExitCode.SUCCESS
    stats = [json.loads(line) for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    assert stats and all(abs(s["loss/D"]) < 1e6 and s["grad_norm/D"] > 0 for s in stats)
    images_per_step = 16 * training.get("dStepsPerG", 1)
    assert stats[-1]["step"] == 320 // images_per_step
    assert (tmp_path / "run" / "checkpoints" / "ckpt-000000000320" / "manifest.json").exists()
