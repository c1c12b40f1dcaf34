"""`ganforge report --prometheus URL`: a real Prometheus scrapes a real trainer run's metrics, and
the page shows what it saw of that job (and only that job); a Prometheus that does not answer leaves
the page with the run directory's charts and says why."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from ganforge.api.exit_codes import ExitCode
from ganforge.api.training_job import GANTrainingJobSpec
from ganforge.local import report_cli
from ganforge.local.control_plane import free_port
from ganforge.observability import observed
from ganforge.trainer import loop
from ganforge.trainer.config import RuntimeOptions, TrainingOptions
from tests.integration.trainer.launch import tiny_spec

NAMESPACE, JOB = "team-a", "fashion"


@contextmanager
def _prometheus(tmp_path: Path, trainer_port: int) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is missing: `make tools` installs it (Debian package prometheus)", pytrace=False)
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"global": {"scrape_interval": "1s"}, "scrape_configs": [{
        "job_name": "trainer", "scrape_interval": "1s",
        "static_configs": [{"targets": [f"127.0.0.1:{trainer_port}"], "labels": {"namespace": NAMESPACE}}]}]}))
    port = free_port()
    with open(tmp_path / "prometheus.log", "wb") as log:
        process = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                    f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def _scraped(url: str, timeout: float = 60) -> None:
    """Wait for a few scrapes of the trainer."""
    deadline = time.monotonic() + timeout
    query = "count_over_time(ganforge_trainer_kimg[1m])"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/api/v1/query?query={urllib.parse.quote(query)}", timeout=5) as r:
                result = json.loads(r.read())["data"]["result"]
            if result and float(result[0]["value"][1]) >= 3:
                return
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"Prometheus at {url} did not scrape the trainer three times in {timeout:.0f} s")


def test_the_report_shows_what_prometheus_saw_of_the_job(tmp_path: Path, cache_dir: Path) -> None:
    spec = GANTrainingJobSpec.model_validate(tiny_spec(workers=1, total_kimg=0.128, checkpoint={"intervalKimg": 0.064}))
    port = free_port()
    run = tmp_path / "run"
    # The trainer's metrics endpoint stays up in this process after the run, with its final values.
    options = TrainingOptions(spec, RuntimeOptions(run_dir=str(run), cache_dir=str(cache_dir), device="cpu",
                                                   threads=1, tensorboard=False, metrics_port=port),
                              job_name=JOB)
    assert loop.train(options) == ExitCode.SUCCESS
    with _prometheus(tmp_path, port) as url:
        _scraped(url)
        page = tmp_path / "report.html"
        assert report_cli.main([JOB, "-n", NAMESPACE, "--run-dir", str(run), "--out", str(page), "--prometheus", url,
                                "--kubeconfig", str(tmp_path / "no-cluster")]) == 0
        html = page.read_text()
        assert f"As Prometheus saw it ({url})" in html
        charts = observed.observed_charts(url, NAMESPACE, JOB, time.time() - 300, time.time())
        titles = [title for title, _ in charts]
        # A CPU run has checkpoints and no GPU series.
        assert titles == ["Age of the newest checkpoint (s)", "Checkpoint time per checkpoint, mean (s)"], titles
        age = charts[0][1][0].points
        assert age and all(0 <= value < 600 for _, value in age), age
        assert sorted(series.label for series in charts[1][1]) == ["stall", "write"]
        for title in titles:
            assert title in html
        # Another namespace's job of the same name is not this one.
        assert observed.observed_charts(url, "team-b", JOB, time.time() - 300, time.time()) == []


def test_a_prometheus_that_does_not_answer_leaves_the_run_charts_and_says_why(
        tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = GANTrainingJobSpec.model_validate(tiny_spec(workers=1, total_kimg=0.064))
    run = tmp_path / "run"
    options = TrainingOptions(spec, RuntimeOptions(run_dir=str(run), cache_dir=str(cache_dir), device="cpu",
                                                   threads=1, tensorboard=False))
    assert loop.train(options) == ExitCode.SUCCESS
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    page = tmp_path / "report.html"
    assert report_cli.main([JOB, "--run-dir", str(run), "--out", str(page), "--prometheus", url,
                            "--kubeconfig", str(tmp_path / "no-cluster")]) == 0
    html = page.read_text()
    assert f"Prometheus at {url} did not answer" in html and "Losses" in html
    assert f"Prometheus at {url} did not answer" in capsys.readouterr().err
