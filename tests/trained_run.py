"""A DCGAN trained on the real Fashion-MNIST for about 40 s on two cores: enough for a generator
whose half-way checkpoint is measurably worse than its final one. Trained once per test session
(the `fashion_run` fixture) for the quality gate's calibration, the analysis and the rollout tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FASHION_STEPS, FASHION_BATCH = 600, 64


@dataclass(frozen=True)
class TrainedRun:
    early: Path  # the checkpoint half-way
    final: Path


def train_fashion(root: Path, cache_dir: Path) -> TrainedRun:
    from tests.integration.trainer.launch import FASHION_MNIST, Gang, write_spec

    assert (FASHION_MNIST / "train-images-idx3-ubyte.gz").exists(), "install Debian's dataset-fashion-mnist"
    total_kimg = FASHION_STEPS * FASHION_BATCH / 1000
    spec = {
        "dataset": {"uri": f"file://{FASHION_MNIST}", "format": "idx", "resolution": 32},
        "model": {"architecture": "dcgan", "latentDim": 64, "width": 32, "ema": {"halfLifeKimg": 2}},
        "training": {"totalKimg": total_kimg, "batchSize": FASHION_BATCH, "reportIntervalKimg": 6.4,
                     "sampleIntervalKimg": 0, "optimizer": {"betas": [0.5, 0.999]}},
        "resources": {"workers": 1, "gpusPerWorker": 0},
        "checkpoint": {"intervalKimg": total_kimg / 2, "keepLast": 3},
        "evaluation": {"intervalKimg": 0, "numSamples": 2000, "featureExtractors": ["domain"], "metrics": ["kid"]},
    }
    run = Gang(write_spec(root / "job.yaml", spec), root / "run", 1, cache_dir, threads=2)
    assert run.wait(timeout=800) == [0], run.output()
    early, final = sorted((root / "run" / "checkpoints").glob("ckpt-*"))
    return TrainedRun(early, final)
