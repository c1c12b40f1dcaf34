from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ganforge.trainer.checkpoint import (
    MANIFEST,
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
from ganforge.trainer.errors import CheckpointStorageError


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
