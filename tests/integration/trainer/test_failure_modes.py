"""Bad input ends with a clear message naming the file or field and a distinct exit code."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from ganforge.api.exit_codes import ExitCode
from ganforge.trainer import cli, losses
from ganforge.trainer.checkpoint import CheckpointManager, LocalStorage
from tests.integration.trainer.launch import tiny_spec, write_spec


def _run(config: Path, run_dir: Path, cache_dir: Path) -> int:
    return cli.main(["--config", str(config), "--run-dir", str(run_dir), "--cache-dir", str(cache_dir),
                     "--threads", "1", "--no-tensorboard", "--device", "cpu"])


def test_truncated_dataset_is_a_data_error(tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "fm"
    data.mkdir()
    header = bytes([0, 0, 8, 3]) + (100).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    (data / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + bytes(28 * 28 * 100))[:-50])
    spec = tiny_spec(workers=1, dataset={"uri": f"file://{data}", "format": "idx", "resolution": 32,
                                         "conditional": False})
    code = _run(write_spec(tmp_path / "job.yaml", spec), tmp_path / "run", cache_dir)
    assert code == ExitCode.DATA_ERROR
    assert "train-images-idx3-ubyte.gz: corrupt or truncated gzip data" in capsys.readouterr().err
    # The resolved options are written before the failure, for the post-mortem.
    assert json.loads((tmp_path / "run" / "training_options.json").read_text())["spec"]["dataset"]["resolution"] == 32


def test_unwritable_checkpoint_location(tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    spec = tiny_spec(workers=1, checkpoint={"uri": f"file://{blocker}/ckpt"})
    code = _run(write_spec(tmp_path / "job.yaml", spec), tmp_path / "run", cache_dir)
    assert code == ExitCode.CHECKPOINT_STORAGE_ERROR
    assert f"checkpoint location file://{blocker}/ckpt is not writable" in capsys.readouterr().err


def test_world_size_mismatch_is_a_config_error(
    tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _run(write_spec(tmp_path / "job.yaml", tiny_spec(workers=2)), tmp_path / "run", cache_dir)
    assert code == ExitCode.CONFIG_ERROR
    expected = "spec.resources.workers (2) x processes per worker (1) is 2 ranks but WORLD_SIZE is 1"
    assert expected in capsys.readouterr().err


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Fault injection: the generator loss turns NaN after 30 steps. Everything downstream (the
    # flag in the step's all_reduce, the stop, the checkpoint policy, the exit code) is the real code.
    real_g_loss = losses.g_loss
    calls = {"n": 0}

    def poisoned(kind: str, fake: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        value = real_g_loss(kind, fake)
        return value * float("nan") if calls["n"] > 30 else value

    monkeypatch.setattr(losses, "g_loss", poisoned)
    spec = tiny_spec(workers=1, total_kimg=1.6, checkpoint={"intervalKimg": 0.16})
    code = _run(write_spec(tmp_path / "job.yaml", spec), tmp_path / "run", cache_dir)
    assert code == ExitCode.NON_FINITE_LOSS
    err = capsys.readouterr().err
    assert "non-finite loss at step 31 (kimg 0.480)" in err
    found = CheckpointManager(LocalStorage(tmp_path / "run" / "checkpoints"), keep_last=3).load_latest()
    assert found is not None
    state, info = found
    assert info.nimg == 480 and info.step == 30
    assert all(bool(torch.isfinite(t).all()) for t in state["G"].values() if t.is_floating_point())


def test_checkpoints_that_all_fail_to_verify_fail_the_run_instead_of_starting_over(
    tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tiny_spec(workers=1, total_kimg=0.32, checkpoint={"intervalKimg": 0.16})
    config = write_spec(tmp_path / "job.yaml", spec)
    assert _run(config, tmp_path / "run", cache_dir) == ExitCode.SUCCESS
    checkpoints = tmp_path / "run" / "checkpoints"
    written = sorted(p.name for p in checkpoints.iterdir())
    for directory in checkpoints.iterdir():  # every checkpoint's state flipped in one byte
        state = directory / "state.pt"
        data = bytearray(state.read_bytes())
        data[len(data) // 2] ^= 0xFF
        state.write_bytes(bytes(data))
    progress = (tmp_path / "run" / "progress.json").read_text()
    code = _run(config, tmp_path / "run", cache_dir)
    assert code == ExitCode.NO_USABLE_CHECKPOINT
    assert "checkpoint(s) at" in (err := capsys.readouterr().err) and "none verifies" in err, err
    # Nothing moved, nothing trained from zero over the run's outputs.
    assert sorted(p.name for p in checkpoints.iterdir()) == written
    assert (tmp_path / "run" / "progress.json").read_text() == progress
