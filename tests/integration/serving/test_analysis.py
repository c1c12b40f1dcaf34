"""One canary analysis (`ganforge analyze`) against the real tritonserver, for a good candidate and
for each planted bad one, with a generator really trained on Fashion-MNIST.

Every revision runs in its own tritonserver, as every revision has its own Deployment in a
cluster; the stable is the run's final generator.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ganforge.api.analysis import AnalysisResult, Measurement
from ganforge.api.inference_service import TritonSpec
from ganforge.local.triton import TritonProcess, triton_serving
from ganforge.serving import analysis_cli
from ganforge.serving.export import export_checkpoint
from ganforge.serving.model_repository import Revision, prepare_model_directory
from tests.planted import planted
from tests.trained_run import TrainedRun

MODEL = "fashion"
FAST_LOAD_RUN = {"durationSeconds": 2, "concurrency": 2, "batchSize": 4}


@contextmanager
def served(revision: Revision, root: Path) -> Iterator[TritonProcess]:
    model_dir = root / revision.path.name / MODEL
    prepare_model_directory(revision.path, revision.sha256, model_dir, "python-onnxruntime", TritonSpec())
    with triton_serving(model_dir) as triton:
        yield triton


def analyse(canary: Revision, stable: TritonProcess, root: Path, tmp_path: Path,
            serving: dict[str, float] | None = None) -> AnalysisResult:
    result_file = tmp_path / f"result-{canary.path.name}.json"
    with served(canary, root) as triton:
        code = analysis_cli.main([
            "--model-name", MODEL, "--canary-url", triton.url, "--stable-url", stable.url,
            "--canary-metrics-url", triton.metrics_url, "--canary-revision", str(canary.path),
            "--canary-sha256", canary.sha256, "--serving", json.dumps({**FAST_LOAD_RUN, **(serving or {})}),
            "--result-file", str(result_file)])
    assert code == 0
    text = result_file.read_text()
    assert len(text.encode()) <= 4096  # a termination message
    return AnalysisResult.model_validate_json(text)


def by_name(result: AnalysisResult) -> dict[str, Measurement]:
    return {m.name: m for m in result.measurements}


@pytest.mark.timeout(900)
def test_analysis_promotes_the_good_and_fails_every_planted_bad_candidate(
        fashion_run: TrainedRun, tmp_path: Path) -> None:
    repository, root = tmp_path / "repository", tmp_path / "served"
    stable = export_checkpoint(fashion_run.final, repository).revision
    with served(stable, root) as stable_triton:
        # Good: the same generator exported at fp16, a different revision of equal quality.
        good = analyse(export_checkpoint(fashion_run.final, repository, precision="fp16").revision,
                       stable_triton, root, tmp_path)
        assert good.verdict == "Pass", good.model_dump_json(indent=2)
        measured = by_name(good)
        increase = measured["kidIncrease"]
        assert increase.upper is not None and increase.upper <= 0.1 and increase.bound == 0.1
        assert good.feature_extractor == "domain" and good.sample_size == 1000
        assert measured["errorRate"].value == 0, good
        assert (measured["tritonRequestSuccess"].value or 0) > 0

        early = analyse(export_checkpoint(fashion_run.early, repository).revision, stable_triton, root, tmp_path)
        assert early.verdict == "Fail" and by_name(early)["kidIncrease"].verdict == "Fail", early

        collapsed = analyse(planted(fashion_run.final, repository, "collapsed"), stable_triton, root, tmp_path)
        assert collapsed.verdict == "Fail"
        assert by_name(collapsed)["diversityRatio"].verdict == "Fail", collapsed

        nan = analyse(planted(fashion_run.final, repository, "nan"), stable_triton, root, tmp_path)
        assert nan.verdict == "Fail"
        assert "non-finite" in by_name(nan)["canaryRequests"].message
        assert by_name(nan)["errorRate"].value == 1.0

        slow = analyse(planted(fashion_run.final, repository, "slow"), stable_triton, root, tmp_path)
        assert slow.verdict == "Fail" and by_name(slow)["p95LatencyMs"].verdict == "Fail", slow
