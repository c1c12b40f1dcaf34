"""`ganforge report` on a real run, opened in headless Chromium: the screenshot is not blank and
shows the charts and the sample grid."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

from ganforge.api.exit_codes import ExitCode
from ganforge.api.training_job import GANTrainingJobSpec
from ganforge.local import report_cli
from ganforge.observability.report import COLOURS
from ganforge.trainer import loop
from ganforge.trainer.config import RuntimeOptions, TrainingOptions
from tests.integration.trainer.launch import tiny_spec


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError("headless Chromium is missing: `make tools` installs it (Debian package chromium)")


def test_the_report_of_a_real_run_renders_in_headless_chromium(tmp_path: Path, cache_dir: Path) -> None:
    spec = GANTrainingJobSpec.model_validate(tiny_spec(workers=1, total_kimg=0.256, training={
        "reportIntervalKimg": 0.032, "sampleIntervalKimg": 0.128}))
    run = tmp_path / "run"
    options = TrainingOptions(spec, RuntimeOptions(run_dir=str(run), cache_dir=str(cache_dir), device="cpu",
                                                   threads=1, tensorboard=False))
    assert loop.train(options) == ExitCode.SUCCESS
    page = tmp_path / "report.html"
    assert report_cli.main(["fashion", "--run-dir", str(run), "--out", str(page),
                            "--kubeconfig", str(tmp_path / "no-cluster")]) == 0
    shot = tmp_path / "report.png"
    result = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                             f"--screenshot={shot}", "--window-size=1280,1600", page.as_uri()],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(np.int32)
    not_white = (pixels < 235).any(axis=2).mean()
    assert not_white > 0.05, f"the page is nearly blank ({not_white:.1%} of pixels drawn)"
    # The first series' colour is on the page: the charts were drawn, not only the text.
    blue = np.array([int(COLOURS[0][i:i + 2], 16) for i in (1, 3, 5)])
    assert (np.abs(pixels - blue).sum(axis=2) < 40).sum() > 200
    # Drawn content, not a flat page: antialiased lines and text, and the grid's grey levels.
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50
