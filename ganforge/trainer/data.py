"""Datasets, held in memory as uint8 [N, C, R, R] tensors at the training resolution.

Resizing happens once at load time, not per batch: Fashion-MNIST at 32x32 is 61 MB, and a batch is
then one index_select plus a cast.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
import urllib.parse
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ganforge.api.storage import PVC_MOUNT_ROOT
from ganforge.api.training_job import DatasetSpec
from ganforge.trainer.config import resolve_uri
from ganforge.trainer.errors import DataError
from ganforge.trainer.image_folder import load_image_folder

_IDX_DTYPES = {0x08: np.uint8}


@dataclass
class ImageDataset:
    images: torch.Tensor  # uint8 [N, C, R, R]
    labels: torch.Tensor | None  # int64 [N]
    num_classes: int
    source: str
    held_out: torch.Tensor | None = None  # uint8 test split, used to calibrate the memorisation signal
    held_out_labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def resolution(self) -> int:
        return int(self.images.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    def content_hash(self) -> str:
        """Identity of the training data as the model sees it (after resizing); keys the caches."""
        digest = hashlib.sha256()
        digest.update(str(tuple(self.images.shape)).encode())
        digest.update(self.images.contiguous().numpy().tobytes())
        if self.labels is not None:
            digest.update(self.labels.numpy().tobytes())
        return digest.hexdigest()[:16]


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the range G produces."""
    return images.float().mul_(2.0 / 255.0).sub_(1.0)


# ---------------------------------------------------------------------------------------------
# IDX (MNIST / Fashion-MNIST)


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read: {error.strerror or error}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(f"{path}: corrupt or truncated gzip data: {error}") from None
    return raw


def read_idx(path: Path) -> np.ndarray:
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path}: truncated IDX file ({len(data)} bytes, no header)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code not in _IDX_DTYPES or not 1 <= ndim <= 4:
        raise DataError(f"{path}: not an unsigned-byte IDX file (magic {data[:4].hex()})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise DataError(
            f"{path}: IDX size mismatch: header says {dims} ({expected} bytes), file has {len(data)} bytes"
            + (" (truncated)" if len(data) < expected else "")
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def _find_idx(root: Path, split: str, kind: str) -> Path | None:
    suffix = "idx3" if kind == "images" else "idx1"
    for name in (f"{split}-{kind}-{suffix}-ubyte", f"{split}-{kind}.{suffix}-ubyte"):
        for candidate in (root / f"{name}.gz", root / name):
            if candidate.exists():
                return candidate
    return None


def _load_idx_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray | None] | None:
    images_path = _find_idx(root, split, "images")
    if images_path is None:
        return None
    images = read_idx(images_path)
    if images.ndim != 3:
        raise DataError(f"{images_path}: expected [N, H, W] images, got shape {images.shape}")
    labels_path = _find_idx(root, split, "labels")
    labels = None
    if labels_path is not None:
        labels = read_idx(labels_path)
        if labels.shape != (images.shape[0],):
            raise DataError(
                f"{labels_path}: {labels.shape[0] if labels.ndim else 0} labels for {images.shape[0]} images"
            )
    return images[:, None], labels


def load_idx(root: Path) -> tuple[np.ndarray, np.ndarray | None, tuple[np.ndarray, np.ndarray | None] | None]:
    if not root.is_dir():
        raise DataError(f"{root}: IDX dataset must be a directory with train-images-idx3-ubyte[.gz]")
    train = _load_idx_split(root, "train")
    if train is None:
        raise DataError(f"{root}: no train-images-idx3-ubyte[.gz] found")
    return train[0], train[1], _load_idx_split(root, "t10k")


# ---------------------------------------------------------------------------------------------
# NPZ and ImageFolder


def _to_nchw(array: np.ndarray, channels: int, source: str) -> np.ndarray:
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4 and array.shape[-1] in (1, 3) and array.shape[1] not in (1, 3):
        array = array.transpose(0, 3, 1, 2)
    if array.ndim != 4 or array.shape[1] not in (1, 3):
        raise DataError(f"{source}: expected images [N,H,W], [N,H,W,C] or [N,C,H,W], got {array.shape}")
    if array.shape[1] != channels:
        raise DataError(f"{source}: images have {array.shape[1]} channels, spec.dataset.channels is {channels}")
    return array


def load_npz(path: Path, channels: int) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            image_key = next((k for k in ("images", "x", "x_train") if k in keys), None)
            if image_key is None:
                raise DataError(f"{path}: no `images` array (found {sorted(keys)})")
            images = archive[image_key]
            label_key = next((k for k in ("labels", "y", "y_train") if k in keys), None)
            labels = archive[label_key] if label_key else None
    except DataError:
        raise
    except (OSError, ValueError, zlib.error, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: cannot read NPZ: {error}") from None
    if images.dtype != np.uint8:
        if np.issubdtype(images.dtype, np.floating) and images.size and images.min() >= 0.0 and images.max() <= 1.0:
            images = np.round(images * 255.0).astype(np.uint8)
        else:
            raise DataError(f"{path}: images must be uint8 (or float in [0, 1]), got {images.dtype}")
    images = _to_nchw(images, channels, str(path))
    if labels is not None:
        labels = np.asarray(labels).astype(np.int64).reshape(-1)
        if labels.shape[0] != images.shape[0]:
            raise DataError(f"{path}: {labels.shape[0]} labels for {images.shape[0]} images")
    return images, labels


# ---------------------------------------------------------------------------------------------
# Synthetic data for smoke tests


def make_fake(uri: str, resolution: int, channels: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class-dependent blobs: cheap, deterministic, and learnable enough to exercise every path."""
    query = urllib.parse.parse_qs(urllib.parse.urlparse(uri).query)
    try:
        count = int(query.get("n", ["1024"])[0])
        classes = int(query.get("classes", ["10"])[0])
    except ValueError:
        raise DataError(f"{uri}: n and classes must be integers") from None
    if count < 1 or classes < 2:
        raise DataError(f"{uri}: need n >= 1 and classes >= 2")
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=count)
    yy, xx = np.mgrid[0:resolution, 0:resolution].astype(np.float32) / resolution
    centres = rng.uniform(0.3, 0.7, size=(count, 2)).astype(np.float32)
    radius = (0.08 + 0.3 * labels / classes).astype(np.float32)
    dist = np.sqrt((yy[None] - centres[:, 0, None, None]) ** 2 + (xx[None] - centres[:, 1, None, None]) ** 2)
    blob = np.clip(1.0 - dist / radius[:, None, None], 0.0, 1.0)
    images = (blob * 255).astype(np.uint8)[:, None]
    if channels == 3:
        tint = rng.uniform(0.5, 1.0, size=(count, 3, 1, 1))
        images = (images * tint).astype(np.uint8)
    return images, labels.astype(np.int64)


# ---------------------------------------------------------------------------------------------


def resize(images: torch.Tensor, resolution: int, mode: str, source: str) -> torch.Tensor:
    """uint8 [N, C, H, W] -> uint8 [N, C, R, R].

    `pad` keeps every source pixel (28 -> 32 adds 2 black pixels per side, Fashion-MNIST's own
    background), so the model learns the data, not resampling artefacts. `interpolate` centre-crops
    to a square and resamples with antialiasing.
    """
    _, _, height, width = images.shape
    if height == width == resolution:
        return images
    if mode == "pad":
        if height > resolution or width > resolution:
            raise DataError(
                f"{source}: images are {height}x{width}, larger than resolution {resolution}; "
                "use spec.dataset.resize: interpolate"
            )
        top, left = (resolution - height) // 2, (resolution - width) // 2
        return F.pad(images, (left, resolution - width - left, top, resolution - height - top))
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    cropped = images[:, :, top : top + side, left : left + side]
    out = []
    for chunk in cropped.split(4096):
        scaled = F.interpolate(chunk.float(), size=(resolution, resolution), mode="bilinear",
                               antialias=True, align_corners=False)
        out.append(scaled.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


def load_dataset(spec: DatasetSpec, pvc_root: str = PVC_MOUNT_ROOT, seed: int = 0,
                 cache_dir: Path | None = None) -> ImageDataset:
    """The dataset at the training resolution; `cache_dir` keeps decoded image folders."""
    uri = spec.uri
    held: tuple[np.ndarray, np.ndarray | None] | None = None
    if spec.format == "fake" or uri.startswith("fake://"):
        images, labels_np = make_fake(uri, spec.resolution, spec.channels, seed)
        held = make_fake(uri, spec.resolution, spec.channels, seed + 1)
        labels: np.ndarray | None = labels_np
        source = uri
    else:
        path = Path(resolve_uri(uri, pvc_root))
        source = str(path)
        if "://" in str(path):
            raise DataError(f"{uri}: only local paths, file:// and pvc:// are supported for datasets")
        if not path.exists():
            raise DataError(f"{path}: dataset not found (spec.dataset.uri {uri!r})")
        if spec.format == "idx":
            images, labels, held = load_idx(path)
        elif spec.format == "npz":
            images, labels = load_npz(path, spec.channels)
        else:
            images, labels = load_image_folder(path, spec.channels, spec.resolution, cache_dir)
    if images.shape[1] != spec.channels:
        raise DataError(f"{source}: images have {images.shape[1]} channels, spec.dataset.channels is {spec.channels}")
    if images.shape[0] == 0:
        raise DataError(f"{source}: dataset is empty")

    tensor = resize(torch.from_numpy(np.ascontiguousarray(images)), spec.resolution, spec.resize, source)
    label_tensor = torch.from_numpy(np.ascontiguousarray(labels)).long() if labels is not None else None
    num_classes = 0
    if label_tensor is not None:
        if int(label_tensor.min()) < 0:
            raise DataError(f"{source}: negative labels")
        num_classes = spec.num_classes or int(label_tensor.max()) + 1
        if int(label_tensor.max()) >= num_classes:
            raise DataError(f"{source}: label {int(label_tensor.max())} >= spec.dataset.numClasses {num_classes}")
    if spec.conditional and label_tensor is None:
        raise DataError(f"{source}: spec.dataset.conditional is true but the dataset has no labels")

    held_images = held_labels = None
    if held is not None:
        held_images = resize(torch.from_numpy(np.ascontiguousarray(held[0])), spec.resolution, spec.resize, source)
        held_labels = torch.from_numpy(np.ascontiguousarray(held[1])).long() if held[1] is not None else None
    return ImageDataset(tensor.contiguous(), label_tensor, num_classes, source, held_images, held_labels)
