"""MLflow tracking against a local sqlite-backed MLflow: one run per job across gangs, metrics by
global step, and the exported model registered with the served revision as its source."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ganforge.api.exit_codes import ExitCode
from ganforge.local.control_plane import free_port
from ganforge.serving import export_cli
from ganforge.trainer import cli
from tests.integration.trainer.launch import tiny_spec, write_spec


def test_a_job_is_one_run_across_gangs_and_its_export_is_registered(
        tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "fashion-experiments")
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is relative
    for name, value in {"GANFORGE_JOB_NAMESPACE": "team", "GANFORGE_JOB_NAME": "test",
                        "GANFORGE_JOB_UID": "0c6d-uid"}.items():
        monkeypatch.setenv(name, value)
    run_dir = tmp_path / "run"
    for gang, total_kimg in ((0, 0.064), (1, 0.128)):  # the second gang resumes and extends the run
        monkeypatch.setenv("GANFORGE_GANG", str(gang))
        spec = tiny_spec(workers=1, total_kimg=total_kimg, training={"reportIntervalKimg": 0.032})
        code = cli.main(["--config", str(write_spec(tmp_path / f"job{gang}.yaml", spec)), "--run-dir", str(run_dir),
                         "--cache-dir", str(cache_dir), "--threads", "1", "--no-tensorboard", "--device", "cpu"])
        assert code == ExitCode.SUCCESS

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("fashion-experiments")
    assert experiment is not None
    [run] = client.search_runs([experiment.experiment_id])
    assert run.data.tags["ganforge.job"] == "0c6d-uid" and run.info.run_name == "test"
    assert {"gang.0", "gang.1"} <= set(run.data.tags) and run.data.tags["gang.1"] == "started at kimg 0.064"
    assert run.data.params["training.batchSize"] == "16" and run.data.params["model.architecture"] == "dcgan"
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "loss/G")
    assert [m.step for m in history] == [32, 64, 96, 128]

    result = tmp_path / "artifact.json"
    code = export_cli.main(["--checkpoint", str(run_dir / "checkpoints" / "ckpt-000000000128"), "--repository",
                            str(tmp_path / "models"), "--result-file", str(result)])
    assert code == ExitCode.SUCCESS
    artifact = json.loads(result.read_text())
    [version] = client.search_model_versions("name='team.test'")
    assert version.source == artifact["uri"] and version.run_id == run.info.run_id
    assert version.tags["sha256"] == artifact["sha256"] and version.tags["revision"] == artifact["revision"]


def test_an_unreachable_server_does_not_stop_training(tmp_path: Path, cache_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")  # nothing listens
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    spec = tiny_spec(workers=1, total_kimg=0.032)
    code = cli.main(["--config", str(write_spec(tmp_path / "job.yaml", spec)), "--run-dir", str(tmp_path / "run"),
                     "--cache-dir", str(cache_dir), "--threads", "1", "--no-tensorboard", "--device", "cpu"])
    assert code == ExitCode.SUCCESS
    assert "is unavailable, this process tracks nothing" in caplog.text
