from __future__ import annotations

import errno
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from ganforge.api.exit_codes import ExitCode
from ganforge.trainer import checkpoint as checkpoint_module
from ganforge.trainer.checkpoint import (
    MANIFEST,
    REPLACED_PREFIX,
    TMP_PREFIX,
    CheckpointCorrupt,
    CheckpointManager,
    FsspecStorage,
    LocalStorage,
    checkpoint_name,
    open_storage,
    sha256_hex,
    to_host,
    verify,
)
from ganforge.trainer.errors import CheckpointStorageError, ConfigError, NoUsableCheckpointError


def _state(value: float) -> dict[str, object]:
    weights = {"w": torch.full((4, 4), value)}
    return {"G": weights, "D": weights, "G_ema": weights, "extra": [1, "x", None]}


def _save(manager: CheckpointManager, nimg: int, value: float, background: bool = False) -> None:
    manager.save(_state(value), {"nimg": nimg, "step": nimg // 10}, {"spec": True}, background=background)


def test_manifest_records_sizes_and_hashes(tmp_path: Path) -> None:
    manager = CheckpointManager(LocalStorage(tmp_path), keep_last=3)
    manager.prepare()
    _save(manager, 100, 1.0)
    directory = tmp_path / checkpoint_name(100)
    manifest = json.loads((directory / MANIFEST).read_text())
    for name, entry in manifest["files"].items():
        data = (directory / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": sha256_hex(data)}
    assert manifest["nimg"] == 100 and manifest["formatVersion"] == 1
    assert manager.newest is not None and manager.newest.nimg == 100


def test_keeps_last_k_and_loads_newest(tmp_path: Path) -> None:
    manager = CheckpointManager(LocalStorage(tmp_path), keep_last=2)
    for i in range(1, 5):
        _save(manager, i * 100, float(i), background=True)
    manager.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint_name(300), checkpoint_name(400)]
    loaded = CheckpointManager(LocalStorage(tmp_path), keep_last=2).load_latest()
    assert loaded is not None
    state, info = loaded
    assert info.nimg == 400 and torch.equal(state["G"]["w"], torch.full((4, 4), 4.0))


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "manifest"])
def test_damaged_newest_is_skipped_and_set_aside(tmp_path: Path, damage: str) -> None:
    manager = CheckpointManager(LocalStorage(tmp_path), keep_last=5)
    _save(manager, 100, 1.0)
    _save(manager, 200, 2.0)
    target = tmp_path / checkpoint_name(200) / "state.pt"
    data = bytearray(target.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "truncate":
        target.write_bytes(bytes(data[:-10]))
    elif damage == "delete":
        target.unlink()
    else:
        (tmp_path / checkpoint_name(200) / MANIFEST).write_text("{not json")
    with pytest.raises(CheckpointCorrupt):
        verify(LocalStorage(tmp_path), checkpoint_name(200))
    loaded = CheckpointManager(LocalStorage(tmp_path), keep_last=5).load_latest()
    assert loaded is not None and loaded[1].nimg == 100
    assert any(p.name.startswith(f"corrupt-{checkpoint_name(200)}") for p in tmp_path.iterdir())
    assert LocalStorage(tmp_path).list_names() == [checkpoint_name(100)]


def test_partial_write_is_invisible_and_cleaned(tmp_path: Path) -> None:
    manager = CheckpointManager(LocalStorage(tmp_path), keep_last=3)
    _save(manager, 100, 1.0)
    partial = tmp_path / f".tmp-{checkpoint_name(200)}-dead"
    partial.mkdir()
    (partial / "state.pt").write_bytes(b"half a checkpoint")
    assert LocalStorage(tmp_path).list_names() == [checkpoint_name(100)]
    fresh = CheckpointManager(LocalStorage(tmp_path), keep_last=3)
    fresh.prepare()
    assert not partial.exists()
    assert fresh.load_latest() is not None


def test_unwritable_location_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(CheckpointStorageError, match="not writable"):
        CheckpointManager(LocalStorage(blocker / "ckpt"), keep_last=1).prepare()


def test_a_claim_is_named_by_its_uri_not_the_pods_mount_path(tmp_path: Path) -> None:
    storage = open_storage("pvc://run-checkpoints/checkpoints", pvc_root=str(tmp_path))
    assert isinstance(storage, LocalStorage) and storage.root == tmp_path / "run-checkpoints" / "checkpoints"
    manager = CheckpointManager(storage, keep_last=1)
    manager.prepare()
    _save(manager, 100, 1.0)
    assert manager.newest is not None and manager.newest.uri == f"pvc://run-checkpoints/checkpoints/{checkpoint_name(100)}"
    assert (tmp_path / "run-checkpoints" / "checkpoints" / checkpoint_name(100) / "manifest.json").is_file()

    (tmp_path / "blocked").write_text("not a directory")
    unwritable = open_storage("pvc://blocked/checkpoints", pvc_root=str(tmp_path))
    with pytest.raises(CheckpointStorageError) as error:
        CheckpointManager(unwritable, keep_last=1).prepare()
    assert f"pvc://blocked/checkpoints (mounted at {tmp_path}/blocked/checkpoints) is not writable" in str(error.value)


def test_background_failure_is_counted_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    failures: list[BaseException] = []
    manager = CheckpointManager(LocalStorage(blocker), keep_last=1, on_failed=failures.append)
    _save(manager, 100, 1.0, background=True)
    outcome = manager.wait()
    assert outcome is not None and isinstance(outcome.error, CheckpointStorageError)
    assert manager.consecutive_failures == 1 and len(failures) == 1
    with pytest.raises(CheckpointStorageError):
        _save(manager, 200, 1.0, background=False)


def test_non_finite_weights_are_never_written(tmp_path: Path) -> None:
    manager = CheckpointManager(LocalStorage(tmp_path), keep_last=1)
    with pytest.raises(CheckpointStorageError, match="not finite"):
        _save(manager, 100, float("nan"))
    assert LocalStorage(tmp_path).list_names() == []


def test_fsspec_storage_round_trip() -> None:
    storage = open_storage("memory://ganforge-test/ckpts", pvc_root="/unused")
    assert isinstance(storage, FsspecStorage)
    manager = CheckpointManager(storage, keep_last=1)
    manager.prepare()
    _save(manager, 100, 1.0)
    _save(manager, 200, 2.0)
    assert storage.list_names() == [checkpoint_name(200)]
    loaded = manager.load_latest()
    assert loaded is not None and loaded[1].nimg == 200


def test_host_copy_is_detached_from_the_live_tensors() -> None:
    live = {"w": torch.zeros(3), "nested": [torch.ones(2)]}
    copy = to_host(live)
    live["w"].add_(5)
    assert torch.equal(copy["w"], torch.zeros(3))


class _FlakyReads(LocalStorage):
    """Local storage whose reads fail with EIO the first `failures` times (a transient NFS or disk error)."""

    def __init__(self, root: Path, failures: int) -> None:
        super().__init__(root)
        self.failures = failures

    def read(self, name: str, file: str) -> bytes:
        if self.failures > 0:
            self.failures -= 1
            raise OSError(errno.EIO, "Input/output error")
        return super().read(name, file)


@pytest.fixture
def two_checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(checkpoint_module, "READ_RETRY_SECONDS", 0.0)
    manager = CheckpointManager(LocalStorage(tmp_path), keep_last=3)
    _save(manager, 100, 1.0)
    _save(manager, 200, 2.0)
    return tmp_path


def test_a_transient_read_error_is_retried_and_never_marks_a_checkpoint_corrupt(two_checkpoints: Path) -> None:
    tmp_path = two_checkpoints
    loaded = CheckpointManager(_FlakyReads(tmp_path, failures=2), keep_last=3).load_latest()
    assert loaded is not None and loaded[1].nimg == 200
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint_name(100), checkpoint_name(200)]


def test_a_read_error_that_persists_stops_the_run_and_moves_nothing(two_checkpoints: Path) -> None:
    tmp_path = two_checkpoints
    with pytest.raises(CheckpointStorageError, match=f"reading checkpoint .*{checkpoint_name(200)} failed 4 times"):
        CheckpointManager(_FlakyReads(tmp_path, failures=100), keep_last=3).load_latest()
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint_name(100), checkpoint_name(200)]


def test_checkpoints_that_all_fail_to_verify_stop_the_run_instead_of_starting_over(tmp_path: Path) -> None:
    manager = CheckpointManager(LocalStorage(tmp_path), keep_last=3)
    _save(manager, 100, 1.0)
    _save(manager, 200, 2.0)
    for nimg in (100, 200):
        (tmp_path / checkpoint_name(nimg) / "state.pt").write_bytes(b"bit rot")
    with pytest.raises(NoUsableCheckpointError) as error:
        CheckpointManager(LocalStorage(tmp_path), keep_last=3).load_latest()
    assert error.value.exit_code == ExitCode.NO_USABLE_CHECKPOINT
    assert f"{checkpoint_name(200)}: state.pt has" in str(error.value) and "nothing was moved" in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint_name(100), checkpoint_name(200)]
    # An empty location is a fresh start, not an error.
    assert CheckpointManager(LocalStorage(tmp_path / "empty"), keep_last=3).load_latest() is None


def test_rewriting_a_checkpoint_of_the_same_name_never_leaves_none(tmp_path: Path) -> None:
    manager = CheckpointManager(LocalStorage(tmp_path), keep_last=3)
    _save(manager, 100, 1.0)
    _save(manager, 100, 3.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint_name(100)]
    loaded = CheckpointManager(LocalStorage(tmp_path), keep_last=3).load_latest()
    assert loaded is not None and torch.equal(loaded[0]["G"]["w"], torch.full((4, 4), 3.0))

    # A writer killed between stepping the old one aside and renaming the new one in: the old one
    # is still the checkpoint, and prepare() gives it its name back.
    (tmp_path / checkpoint_name(100)).rename(tmp_path / f"{REPLACED_PREFIX}{checkpoint_name(100)}-deadbeef")
    fresh = CheckpointManager(LocalStorage(tmp_path), keep_last=3)
    fresh.prepare()
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint_name(100)]
    loaded = fresh.load_latest()
    assert loaded is not None and loaded[1].nimg == 100


def test_a_same_name_rewrite_that_fails_to_take_the_name_keeps_the_old_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manager = CheckpointManager(LocalStorage(tmp_path), keep_last=3)
    _save(manager, 100, 1.0)
    rename = os.rename

    def failing_for_the_new_one(source: Any, destination: Any) -> None:
        if Path(source).name.startswith(TMP_PREFIX):
            raise OSError(errno.EIO, "Input/output error")
        rename(source, destination)

    monkeypatch.setattr(os, "rename", failing_for_the_new_one)
    with pytest.raises(CheckpointStorageError, match="Input/output error"):
        _save(manager, 100, 3.0)
    monkeypatch.setattr(os, "rename", rename)
    # Under its own name at once, not only after the next prepare(): an export may read it now.
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint_name(100)]
    loaded = CheckpointManager(LocalStorage(tmp_path), keep_last=3).load_latest()
    assert loaded is not None and torch.equal(loaded[0]["G"]["w"], torch.full((4, 4), 1.0))


def test_an_object_store_that_fails_now_and_then_is_retried_on_write_list_and_read(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every object-store call the checkpoints make fails once (a throttled or reset request) and
    then works: the checkpoint is written, found and loaded all the same."""
    monkeypatch.setattr(checkpoint_module, "READ_RETRY_SECONDS", 0.0)
    storage = open_storage(f"memory://ganforge-test/flaky-{os.getpid()}", pvc_root="/unused")
    assert isinstance(storage, FsspecStorage)
    failed: list[str] = []
    for method in ("pipe", "ls", "cat_file"):
        real = getattr(storage.fs, method)
        seen: set[str] = set()

        def once_failing(path: str, *args: Any, _real: Any = real, _seen: set[str] = seen, _name: str = method,
                         **kwargs: Any) -> Any:
            if path not in _seen:
                _seen.add(path)
                failed.append(_name)
                raise OSError(errno.ECONNRESET, "Connection reset by peer")
            return _real(path, *args, **kwargs)

        monkeypatch.setattr(storage.fs, method, once_failing)
    manager = CheckpointManager(storage, keep_last=3)
    _save(manager, 100, 1.0)
    loaded = CheckpointManager(storage, keep_last=3).load_latest()
    assert loaded is not None and loaded[1].nimg == 100 and torch.equal(loaded[0]["G"]["w"], torch.full((4, 4), 1.0))
    assert {"pipe", "ls", "cat_file"} <= set(failed), failed


def test_an_object_store_keeps_a_complete_checkpoint_of_the_same_name() -> None:
    storage = open_storage("memory://ganforge-test/same-name", pvc_root="/unused")
    manager = CheckpointManager(storage, keep_last=3)
    _save(manager, 100, 1.0)
    _save(manager, 100, 1.0)
    loaded = CheckpointManager(storage, keep_last=3).load_latest()
    assert loaded is not None and loaded[1].nimg == 100


@pytest.mark.parametrize(("uri", "extra"), [("s3://bucket/run", "s3"), ("gs://bucket/run", "gcs")])
def test_an_object_store_without_its_filesystem_names_the_extra(uri: str, extra: str) -> None:
    module = {"s3": "s3fs", "gcs": "gcsfs"}[extra]
    if importlib.util.find_spec(module) is not None:
        pytest.fail(f"{module} is installed here, so this test cannot see the missing-extra error")
    with pytest.raises(ConfigError, match=rf"spec.checkpoint.uri {uri}: .*install ganforge\[{extra}\]"):
        open_storage(uri, pvc_root="/unused")
