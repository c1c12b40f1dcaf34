"""The report page from a run directory: every chart, the reclaims marked and the lines broken
across them, the latest grid inline, and clear errors for a directory with nothing to show."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from ganforge.evaluation.images import save_image_grid
from ganforge.local.report_cli import local_prometheus
from ganforge.observability.report import RunRecord, render


def _run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    stats = []
    for i in range(1, 11):
        # Reports 1-5 before the reclaim at t=1050, 6-10 after the resume at t=1100.
        t = 1000 + 10 * i + (50 if i > 5 else 0)
        stats.append({"kimg": 0.5 * i, "time": t, "loss/G": 1 + i / 10, "loss/D": 1 - i / 20, "d_output/real": 0.5,
                      "d_output/fake": -0.5, "grad_norm/G": 2.0, "grad_norm/D": 3.0,
                      "timing/images_per_second": 500.0})
    (run / "stats.jsonl").write_text("".join(json.dumps(s) + "\n" for s in stats) + '{"kimg": 5.5, "ti')
    (run / "metrics.jsonl").write_text(json.dumps({"kimg": 2.5, "fd_domain": 40.0}) + "\n"
                                       + json.dumps({"kimg": 5.0, "fd_domain": 20.0}) + "\n")
    events = [{"time": 1000, "event": "started", "kimg": 0.0}, {"time": 1055, "event": "preempted", "kimg": 2.5},
              {"time": 1100, "event": "resumed", "kimg": 2.5}, {"time": 1160, "event": "finished", "kimg": 5.0}]
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 1, 8, 8), dtype=np.uint8))
    save_image_grid(images, run / "samples" / "fakes-000000002500.png", 2)
    save_image_grid(images, run / "samples" / "fakes-000000005000.png", 2)
    return run


def test_the_page_has_every_chart_the_reclaim_and_the_latest_grid(tmp_path: Path) -> None:
    record = RunRecord.read(_run_dir(tmp_path))
    assert len(record.stats) == 10  # the torn last line is skipped
    assert record.grid is not None and record.grid.name == "fakes-000000005000.png"
    page = render(record, "GANTrainingJob ns/fashion", {"phase": "Succeeded", "preemptions": 1})
    assert page.count("<svg") == 6 and "no data yet" not in page
    assert "preempted at kimg 2.50" in page and "resumed from kimg 2.50" in page
    assert 'src="data:image/png;base64,' in page and "fakes-000000005000.png" in page
    assert "<th>phase</th><td>Succeeded</td>" in page and "<th>reclaims survived</th><td>1</td>" in page
    # The throughput line over wall time is two runs: none joins the points across the reclaim.
    throughput = page.split("Images per second", 1)[1].split("</figure>", 1)[0]
    assert len(re.findall(r"<polyline", throughput)) == 2


def test_a_run_without_reports_or_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        RunRecord.read(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"stats\.jsonl has no reports yet"):
        RunRecord.read(tmp_path / "empty")


def test_ganforge_locals_prometheus_is_found_beside_its_kubeconfig(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    assert local_prometheus(str(kubeconfig)) is None  # no cluster file: not ganforge local
    (tmp_path / "cluster.json").write_text(json.dumps({"clusterId": "x", "prometheus": "http://127.0.0.1:9090"}))
    assert local_prometheus(str(kubeconfig)) == "http://127.0.0.1:9090"
    (tmp_path / "cluster.json").write_text("not json")
    assert local_prometheus(str(kubeconfig)) is None
    assert local_prometheus(None) is None
