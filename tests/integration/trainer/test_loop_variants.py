"""Every loss, regulariser and architecture runs through the real loop (tiny model, fake data)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from ganforge.api.exit_codes import ExitCode
from ganforge.api.training_job import GANTrainingJobSpec
from ganforge.trainer import cli, loop, losses
from ganforge.trainer.config import RuntimeOptions, TrainingOptions
from tests.integration.trainer.launch import (
    assert_identical,
    load_checkpoint,
    straight_and_extended,
    tiny_spec,
    write_spec,
)


@pytest.mark.parametrize(
    "model, training",
    [
        ({"architecture": "sngan-resnet", "loss": "hinge", "regularization": {"r1Gamma": 1.0}}, {}),
        ({"architecture": "dcgan", "loss": "wgan-gp"}, {"dStepsPerG": 2}),
        ({"architecture": "dcgan", "regularization": {"spectralNorm": True}}, {"precision": "bf16"}),
        # Inductor's C++ backend: the compiled modules share weights with the eager ones the
        # optimizers, EMA and checkpoints see.
        ({"architecture": "dcgan"}, {"compile": True, "channelsLast": True}),
        # Penalties differentiate D's gradient (a second backward), which compiled graphs do not
        # support: they go through the eager D, sharing its weights.
        ({"architecture": "dcgan", "regularization": {"r1Gamma": 1.0}}, {"compile": True}),
        ({"architecture": "dcgan", "loss": "wgan-gp"}, {"compile": True}),
    ],
    ids=["sngan-hinge-r1", "dcgan-wgangp-2dsteps", "dcgan-sn-bf16", "dcgan-compile-channels-last",
         "dcgan-compile-r1", "dcgan-compile-wgangp"],
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


RESUME_VARIANTS = {
    "channels-last": ({}, {"channelsLast": True}),
    "sngan-hinge-sn": ({"architecture": "sngan-resnet", "loss": "hinge", "regularization": {"spectralNorm": True}},
                       {}),
    "r1": ({"regularization": {"r1Gamma": 1.0}}, {}),
    "lazy-r1": ({"regularization": {"r1Gamma": 1.0, "r1Interval": 4}}, {}),
    "wgan-gp-2dsteps": ({"loss": "wgan-gp"}, {"dStepsPerG": 2}),
    "bf16": ({}, {"precision": "bf16"}),
    "compile-r1": ({"regularization": {"r1Gamma": 1.0}}, {"compile": True}),
    "compile-wgan-gp": ({"loss": "wgan-gp"}, {"compile": True}),
    # Spectral norm's power iteration (buffers updated in the forward) and the lazy R1 pass under dynamo.
    "compile-sngan-hinge-sn-lazy-r1": ({"architecture": "sngan-resnet", "loss": "hinge",
                                        "regularization": {"spectralNorm": True, "r1Gamma": 1.0, "r1Interval": 2}},
                                       {"compile": True}),
    "augment-lazy-r1": ({"regularization": {"r1Gamma": 1.0, "r1Interval": 2}},
                        {"augment": {"policy": ["color", "translation", "cutout"], "xflip": True}}),
    # The adaptive probability is state: the resumed run must continue from where p had moved.
    "augment-adaptive": ({}, {"augment": {"policy": ["translation", "cutout"], "probability": 0.5,
                                          "adaptive": {"target": 0.5, "speedKimg": 0.2}}}),
}


@pytest.mark.parametrize("variant", list(RESUME_VARIANTS))
def test_run_extended_after_finishing_is_bitwise_identical(tmp_path: Path, cache_dir: Path, variant: str) -> None:
    """Every piece of state of each loss, regulariser, precision and compile mode survives a
    checkpoint round trip: stopping halfway and extending to the end equals running straight."""
    model, training = RESUME_VARIANTS[variant]
    images_per_step = 16 * training.get("dStepsPerG", 1)

    def spec_at(total_kimg: float) -> dict[str, Any]:
        spec = tiny_spec(workers=1, total_kimg=total_kimg, model=model, training=training)
        spec["model"]["width"] = 4
        return spec

    a, b = straight_and_extended(tmp_path, spec_at, cache_dir)
    assert b["progress"]["step"] == 320 // images_per_step
    if training.get("channelsLast"):
        assert a["G"]["net.0.weight"].is_contiguous(memory_format=torch.channels_last)
    for key in ("G_ema", "G", "D", "opt_g", "opt_d", "scaler_g", "scaler_d", "progress"):
        assert_identical(a[key], b[key], key)


def test_lazy_r1_penalises_every_interval_steps_scaled_by_the_interval(
        tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = losses.r1_penalty

    def counted(real: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        calls.append(real.shape[0])
        return original(real, logits)

    monkeypatch.setattr(losses, "r1_penalty", counted)

    def final_d(run: str, steps: int, regularization: dict[str, Any]) -> dict[str, torch.Tensor]:
        spec = tiny_spec(workers=1, total_kimg=steps * 16 / 1000, model={"regularization": regularization})
        spec["model"]["width"] = 4
        config = write_spec(tmp_path / f"{run}.yaml", spec)
        code = cli.main(["--config", str(config), "--run-dir", str(tmp_path / run), "--cache-dir", str(cache_dir),
                         "--threads", "1", "--no-tensorboard", "--device", "cpu"])
        assert code == ExitCode.SUCCESS
        name = f"ckpt-{steps * 16:012d}"
        state: dict[str, torch.Tensor] = load_checkpoint(tmp_path / run / "checkpoints" / name)["D"]
        return state

    final_d("lazy-8", 8, {"r1Gamma": 10.0, "r1Interval": 4})
    assert len(calls) == 2  # D steps 0 and 4
    calls.clear()
    final_d("every-8", 8, {"r1Gamma": 10.0})
    assert len(calls) == 8
    # One step: the lazy penalty (its own pass, weight x4) is the every-step penalty of 4x gamma.
    lazy = final_d("lazy-1", 1, {"r1Gamma": 10.0, "r1Interval": 4})
    scaled = final_d("scaled-1", 1, {"r1Gamma": 40.0})
    plain = final_d("plain-1", 1, {})
    # Weights only: the extra pass also moves BatchNorm's running statistics, which training never reads.
    for key in (k for k in lazy if "running_" not in k and "num_batches" not in k):
        torch.testing.assert_close(lazy[key], scaled[key], rtol=1e-4, atol=1e-6, msg=key)
    assert any(not torch.allclose(lazy[key], plain[key]) for key in lazy if lazy[key].is_floating_point())


def test_deterministic_mode_holds_for_the_run_and_is_undone_after(tmp_path: Path, cache_dir: Path) -> None:
    spec = GANTrainingJobSpec.model_validate(
        tiny_spec(workers=1, total_kimg=0.064, training={"deterministic": True, "reportIntervalKimg": 0.016}))
    seen: list[bool] = []
    options = TrainingOptions(spec, RuntimeOptions(run_dir=str(tmp_path / "run"), cache_dir=str(cache_dir),
                                                   device="cpu", threads=1, tensorboard=False))
    assert not torch.are_deterministic_algorithms_enabled()
    code = loop.train(options, hooks=[lambda _event: seen.append(torch.are_deterministic_algorithms_enabled())])
    assert code == ExitCode.SUCCESS
    assert seen and all(seen)
    assert not torch.are_deterministic_algorithms_enabled()


def test_tensorboard_gets_the_scalars_and_every_sample_grid(tmp_path: Path, cache_dir: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    spec = tiny_spec(workers=1, total_kimg=0.128, training={"sampleIntervalKimg": 0.064, "reportIntervalKimg": 0.032})
    code = cli.main(["--config", str(write_spec(tmp_path / "job.yaml", spec)), "--run-dir", str(tmp_path / "run"),
                     "--cache-dir", str(cache_dir), "--threads", "1", "--device", "cpu"])
    assert code == ExitCode.SUCCESS
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0}).Reload()
    grids = events.Images("samples/fakes")
    # At the start, at 64 and 128 images; each a PNG of the 4-class grid (4 columns x 8 rows of 16 px).
    assert [grid.step for grid in grids] == [0, 64, 128]
    assert (grids[0].width, grids[0].height) == (4 * 16, 8 * 16)
    assert [scalar.step for scalar in events.Scalars("loss/G")] == [32, 64, 96, 128]


def test_adaptive_augmentation_moves_its_probability_with_d_and_checkpoints_it(tmp_path: Path,
                                                                               cache_dir: Path) -> None:
    spec = tiny_spec(workers=1, total_kimg=0.32, training={
        "augment": {"policy": ["translation", "cutout"], "adaptive": {"target": 0.3, "speedKimg": 0.5}}})
    spec["model"]["width"] = 4
    code = cli.main(["--config", str(write_spec(tmp_path / "job.yaml", spec)), "--run-dir", str(tmp_path / "run"),
                     "--cache-dir", str(cache_dir), "--threads", "1", "--no-tensorboard", "--device", "cpu"])
    assert code == ExitCode.SUCCESS
    stats = [json.loads(line) for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    probabilities = [s["augment/probability"] for s in stats]
    signs = [s["augment/real_sign"] for s in stats]
    assert all(0.0 <= p <= 1.0 for p in probabilities) and all(-1.0 <= r <= 1.0 for r in signs)
    # Each report spans two steps, each moving p by 16 / 500 towards the side D's real sign is on.
    step = 16 / 500
    previous = 0.0
    for p, r in zip(probabilities, signs, strict=True):
        assert abs(p - previous) <= 2 * step + 1e-9
        # Two steps' signs average above the target only if one was above it: p did not fall twice.
        if r > 0.3 + 1e-6 and previous + 2 * step <= 1.0:
            assert p >= previous - 1e-9
        if r < 0.3 - 1e-6 and previous - 2 * step >= 0.0:
            assert p <= previous + 1e-9
        previous = p
    assert max(probabilities) > 0, "D's real sign never rose above the target in 20 steps"
    final = load_checkpoint(tmp_path / "run" / "checkpoints" / "ckpt-000000000320")["progress"]
    assert final["augment_probability"] == pytest.approx(probabilities[-1])
