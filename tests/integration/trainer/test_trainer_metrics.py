"""Rank 0 serves every trainer metric of the catalogue that a CPU run has, with sound values."""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ganforge.api import metrics as catalogue
from ganforge.api.exit_codes import ExitCode
from ganforge.api.training_job import GANTrainingJobSpec
from ganforge.local.control_plane import free_port
from ganforge.trainer import loop
from ganforge.trainer.config import RuntimeOptions, TrainingOptions
from tests.integration.trainer.launch import tiny_spec

# Evaluation is off in this run; CUDA memory and utilisation exist only on a GPU.
NOT_IN_THIS_RUN = {catalogue.TRAINER_EVALUATION, catalogue.TRAINER_LAST_EVALUATION_KIMG, *catalogue.CUDA_ONLY}


def test_a_cpu_run_exposes_every_trainer_metric(tmp_path: Path, cache_dir: Path) -> None:
    spec = GANTrainingJobSpec.model_validate(tiny_spec(workers=1, total_kimg=0.128, checkpoint={"intervalKimg": 0.064}))
    port = free_port()
    started = time.time()
    options = TrainingOptions(spec, RuntimeOptions(run_dir=str(tmp_path / "run"), cache_dir=str(cache_dir),
                                                   device="cpu", threads=1, tensorboard=False, metrics_port=port),
                              job_name="fashion")
    assert loop.train(options) == ExitCode.SUCCESS
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    names = {name for name, _ in samples}
    for metric in catalogue.TRAINER_METRICS:
        if metric not in NOT_IN_THIS_RUN:
            assert set(metric.series) <= names, f"{metric.name} not scraped"

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted({"job_name": "fashion", **labels}.items())))]

    assert value("ganforge_trainer_kimg") == 0.128
    step = value("ganforge_trainer_step_seconds")
    phases = [value("ganforge_trainer_step_phase_seconds", phase=p) for p in ("data", "compute", "communication")]
    assert all(p >= 0 for p in phases) and sum(phases) == pytest.approx(step, rel=1e-6)
    assert started - 2 <= value("ganforge_trainer_last_checkpoint_timestamp_seconds") <= time.time() + 2
    assert value("ganforge_trainer_last_checkpoint_kimg") == 0.128
    assert value("ganforge_trainer_checkpoint_failures_total") == 0
    assert samples[("ganforge_build_info", (("component", "trainer"), ("version", catalogue.build_version())))] == 1


def test_a_resumed_gang_reports_the_checkpoint_it_resumed_from_before_its_first_write(
        tmp_path: Path, cache_dir: Path) -> None:
    """Checkpoint age is alerted on: a new gang must not hide it until it writes a checkpoint of its own."""

    def options(total_kimg: float, port: int = 0) -> TrainingOptions:
        spec = GANTrainingJobSpec.model_validate(
            tiny_spec(workers=1, total_kimg=total_kimg, checkpoint={"intervalKimg": 0.064}))
        return TrainingOptions(spec, RuntimeOptions(run_dir=str(tmp_path / "run"), cache_dir=str(cache_dir),
                                                    device="cpu", threads=1, tensorboard=False, metrics_port=port),
                               job_name="fashion")

    assert loop.train(options(0.064)) == ExitCode.SUCCESS
    manifest = json.loads((tmp_path / "run" / "checkpoints" / "ckpt-000000000064" / "manifest.json").read_text())
    port = free_port()
    first_seen: list[dict[str, float]] = []

    def scrape_once(_event: object) -> None:
        if not first_seen:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
            first_seen.append({s.name: s.value for family in text_string_to_metric_families(text)
                               for s in family.samples if s.name.startswith("ganforge_trainer_last_checkpoint")})

    resumed = time.time()
    assert loop.train(options(0.128, port), hooks=[scrape_once]) == ExitCode.SUCCESS
    assert first_seen and first_seen[0]["ganforge_trainer_last_checkpoint_kimg"] == 0.064, first_seen
    # The resume, not the write: the wait for the new gang is not work at risk.
    created = datetime.fromisoformat(manifest["created"].replace("Z", "+00:00")).timestamp()
    assert created <= resumed <= first_seen[0]["ganforge_trainer_last_checkpoint_timestamp_seconds"] <= time.time()
