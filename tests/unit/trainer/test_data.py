from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from ganforge.api.training_job import DatasetSpec
from ganforge.evaluation.images import to_uint8
from ganforge.trainer.data import load_dataset, read_idx, resize, to_float
from ganforge.trainer.errors import DataError


def _idx_images(images: np.ndarray) -> bytes:
    return struct.pack(">HBB", 0, 8, 3) + struct.pack(">3I", *images.shape) + images.astype(np.uint8).tobytes()


def _idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">HBB", 0, 8, 1) + struct.pack(">I", len(labels)) + labels.astype(np.uint8).tobytes()


def _write_idx_dir(root: Path, n: int = 20, gz: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    blobs = {"train-images-idx3-ubyte": _idx_images(images), "train-labels-idx1-ubyte": _idx_labels(labels)}
    for name, blob in blobs.items():
        if gz:
            (root / f"{name}.gz").write_bytes(gzip.compress(blob))
        else:
            (root / name).write_bytes(blob)
    return images, labels


@pytest.mark.parametrize("gz", [True, False])
def test_idx_loads_and_pads_28_to_32(tmp_path: Path, gz: bool) -> None:
    images, labels = _write_idx_dir(tmp_path / "fm", gz=gz)
    data = load_dataset(DatasetSpec(uri=f"file://{tmp_path / 'fm'}", resolution=32, conditional=True))
    assert data.images.shape == (20, 1, 32, 32) and data.images.dtype == torch.uint8
    assert torch.equal(data.images[:, 0, 2:30, 2:30], torch.from_numpy(images))
    assert int(data.images[:, :, :2].sum()) == 0
    assert torch.equal(data.labels, torch.from_numpy(labels).long())
    assert data.num_classes == int(labels.max()) + 1
    assert data.held_out is None


def test_interpolate_mode_and_round_trip() -> None:
    images = torch.full((2, 1, 28, 28), 200, dtype=torch.uint8)
    assert torch.equal(resize(images, 16, "interpolate", "x"), torch.full((2, 1, 16, 16), 200, dtype=torch.uint8))
    with pytest.raises(DataError, match="larger than resolution 16"):
        resize(images, 16, "pad", "x")
    raw = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    assert torch.equal(to_uint8(to_float(raw)), raw)


def test_truncated_and_corrupt_files_name_the_file(tmp_path: Path) -> None:
    _write_idx_dir(tmp_path / "gz")
    path = tmp_path / "gz" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: corrupt or truncated gzip"):
        load_dataset(DatasetSpec(uri=str(tmp_path / "gz")))
    _write_idx_dir(tmp_path / "raw", gz=False)
    raw = tmp_path / "raw" / "train-images-idx3-ubyte"
    raw.write_bytes(raw.read_bytes()[:-5])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: IDX size mismatch.*\(truncated\)"):
        read_idx(raw)
    raw.write_bytes(b"\x01\x02\x03\x04garbage")
    with pytest.raises(DataError, match="not an unsigned-byte IDX file"):
        read_idx(raw)
    with pytest.raises(DataError, match="dataset not found"):
        load_dataset(DatasetSpec(uri=str(tmp_path / "nowhere")))


def test_label_count_mismatch(tmp_path: Path) -> None:
    _write_idx_dir(tmp_path / "fm")
    (tmp_path / "fm" / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_labels(np.zeros(5))))
    with pytest.raises(DataError, match="5 labels for 20 images"):
        load_dataset(DatasetSpec(uri=str(tmp_path / "fm")))


def test_npz_shapes_and_channels(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, images=np.zeros((4, 16, 16, 3), np.uint8), labels=np.arange(4))
    data = load_dataset(DatasetSpec(uri=str(path), format="npz", resolution=16, channels=3))
    assert data.images.shape == (4, 3, 16, 16)
    with pytest.raises(DataError, match=r"images have 3 channels, spec\.dataset\.channels is 1"):
        load_dataset(DatasetSpec(uri=str(path), format="npz", resolution=16, channels=1))
    np.savez(path, images=np.zeros((4, 5), np.uint8))
    with pytest.raises(DataError, match=r"expected images \[N,H,W\]"):
        load_dataset(DatasetSpec(uri=str(path), format="npz", resolution=16))
    path.write_bytes(b"PK\x03\x04 broken zip")
    with pytest.raises(DataError, match=r"d\.npz: cannot read NPZ"):
        load_dataset(DatasetSpec(uri=str(path), format="npz", resolution=16))


def test_image_folder(tmp_path: Path) -> None:
    from PIL import Image

    for label in ("cats", "dogs"):
        (tmp_path / label).mkdir()
        for i in range(3):
            Image.new("RGB", (40, 30), (i * 50, 10, 10)).save(tmp_path / label / f"{i}.png")
    (tmp_path / "dogs" / "bad.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"bad\.png: cannot decode image"):
        load_dataset(DatasetSpec(uri=str(tmp_path), format="image-folder", resolution=16, channels=3))
    (tmp_path / "dogs" / "bad.png").unlink()
    data = load_dataset(DatasetSpec(uri=str(tmp_path), format="image-folder", resolution=16, channels=3))
    assert data.images.shape == (6, 3, 16, 16) and data.labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_an_image_folder_is_decoded_once_into_the_cache(tmp_path: Path) -> None:
    from PIL import Image

    root, cache = tmp_path / "folder", tmp_path / "cache"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(4):
            Image.new("L", (20, 20), i * 60).save(root / label / f"{i}.png")
    spec = DatasetSpec(uri=str(root), format="image-folder", resolution=16)
    first = load_dataset(spec, cache_dir=cache)
    assert len(list(cache.glob("image-folder-*.npy"))) == 1
    # Same name, size and modification time but undecodable: the cache answers, nothing is decoded.
    victim = root / "a" / "0.png"
    stat = victim.stat()
    victim.write_bytes(b"x" * stat.st_size)
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = load_dataset(spec, cache_dir=cache)
    assert torch.equal(again.images, first.images) and torch.equal(again.labels, first.labels)
    # A file that changed is noticed: the folder is decoded again (and this one fails to).
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(DataError, match=r"0\.png: cannot decode image"):
        load_dataset(spec, cache_dir=cache)


def test_an_unlabelled_image_folder(tmp_path: Path) -> None:
    from PIL import Image

    for i in range(3):
        Image.new("L", (16, 16), i * 80).save(tmp_path / f"{i}.jpg")
    data = load_dataset(DatasetSpec(uri=str(tmp_path), format="image-folder", resolution=16))
    assert data.images.shape == (3, 1, 16, 16) and data.labels is None and data.num_classes == 0
    with pytest.raises(DataError, match="conditional is true but the dataset has no labels"):
        load_dataset(DatasetSpec(uri=str(tmp_path), format="image-folder", resolution=16, conditional=True))
    (tmp_path / "class-dir").mkdir()
    with pytest.raises(DataError, match="has both class sub-directories and images of its own"):
        load_dataset(DatasetSpec(uri=str(tmp_path), format="image-folder", resolution=16))


def test_fake_is_deterministic_and_conditional_needs_labels(tmp_path: Path) -> None:
    a = load_dataset(DatasetSpec(uri="fake://x?n=64&classes=4", format="fake", resolution=16))
    b = load_dataset(DatasetSpec(uri="fake://x?n=64&classes=4", format="fake", resolution=16))
    assert torch.equal(a.images, b.images) and a.content_hash() == b.content_hash() and a.num_classes == 4
    np.savez(tmp_path / "u.npz", images=np.zeros((4, 16, 16), np.uint8))
    with pytest.raises(DataError, match="conditional is true but the dataset has no labels"):
        load_dataset(DatasetSpec(uri=str(tmp_path / "u.npz"), format="npz", resolution=16, conditional=True))
