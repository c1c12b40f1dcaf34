"""A short CPU run on the real Fashion-MNIST measurably improves the generator.

The assertion is on FD in the domain classifier's feature space (fd_domain): it must fall to less
than half of its value for the untrained generator. EfficientNet-Lite0 features are left out here
only to keep the test fast on two shared cores; they are exercised by the unit tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tests.integration.trainer.launch import FASHION_MNIST, Gang, write_spec

STEPS, BATCH = 400, 64


# A few minutes on 2 idle cores; the default per-test limit leaves too little room on a busy machine.
@pytest.mark.timeout(1800)
def test_fd_falls_by_more_than_half(tmp_path: Path, cache_dir: Path) -> None:
    assert (FASHION_MNIST / "train-images-idx3-ubyte.gz").exists(), "install Debian's dataset-fashion-mnist"
    spec = {
        "dataset": {"uri": f"file://{FASHION_MNIST}", "format": "idx", "resolution": 32},
        "model": {"architecture": "dcgan", "latentDim": 64, "width": 32, "ema": {"halfLifeKimg": 2}},
        "training": {"totalKimg": STEPS * BATCH / 1000, "batchSize": BATCH, "reportIntervalKimg": 3.2,
                     "sampleIntervalKimg": 0, "optimizer": {"betas": [0.5, 0.999]}},
        "resources": {"workers": 1, "gpusPerWorker": 0},
        "checkpoint": {"intervalKimg": 100},
        "evaluation": {"intervalKimg": 0, "numSamples": 1000, "featureExtractors": ["domain"],
                       "metrics": ["fd", "kid", "precision_recall", "mode_collapse", "memorization"]},
    }
    run = Gang(write_spec(tmp_path / "job.yaml", spec), tmp_path / "run", 1, cache_dir, threads=2)
    assert run.wait(timeout=1700) == [0], run.output()

    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    start, end = records[0], records[-1]
    assert start["kimg"] == 0 and end["kimg"] == STEPS * BATCH / 1000
    assert end["fd_domain"] < 0.5 * start["fd_domain"], f"fd_domain: {start['fd_domain']:.1f} -> {end['fd_domain']:.1f}"
    assert end["class_coverage"] > start["class_coverage"]
    assert end["kid_domain"] < start["kid_domain"]

    grid = tmp_path / "run" / "samples" / f"fakes-{STEPS * BATCH:012d}.png"
    with Image.open(grid) as image:
        assert image.size == (8 * 32, 8 * 32)
    progress = json.loads((tmp_path / "run" / "progress.json").read_text())
    assert progress["state"] == "finished" and progress["metrics"]["fd_domain"] == end["fd_domain"]
