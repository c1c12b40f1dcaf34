"""Image-folder datasets: decoded once, in parallel, and cached as one array.

Decoding tens of thousands of PNG/JPEG files takes minutes, and every rank of every gang did it
again at every restart. The decoded uint8 array is cached under the cache directory, keyed by the
folder's listing (every file's relative path, size and modification time) and the decoding
settings, so an edited, added or removed file decodes the folder again. The trainer's rank 0 fills
the cache first; the other ranks (and every later gang) read it, when the cache directory is shared.

Layout: one sub-directory per class (labels = the sorted class names' indices), or, for unlabelled
data, the images directly in the folder.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ganforge.trainer.errors import DataError

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif"}
CACHE_VERSION = 1  # bump when decoding changes, so no stale array is read


def _images_in(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def listing(root: Path) -> tuple[list[Path], np.ndarray | None]:
    """Every image file, and its label (None for an unlabelled folder)."""
    if not root.is_dir():
        raise DataError(f"{root}: image-folder dataset must be a directory")
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    loose = _images_in(root)
    if classes and loose:
        raise DataError(f"{root}: has both class sub-directories and images of its own ({loose[0].name}); "
                        "use one sub-directory per class, or only images for unlabelled data")
    if not classes:
        if not loose:
            raise DataError(f"{root}: no images found")
        return loose, None
    files: list[Path] = []
    labels: list[int] = []
    for index, directory in enumerate(classes):
        mine = _images_in(directory)
        files += mine
        labels += [index] * len(mine)
    if not files:
        raise DataError(f"{root}: no images found in its class sub-directories")
    return files, np.asarray(labels, dtype=np.int64)


def listing_key(root: Path, files: list[Path], channels: int, resolution: int) -> str:
    digest = hashlib.sha256(f"v{CACHE_VERSION} c{channels} r{resolution}\n".encode())
    for file in files:
        stat = file.stat()
        digest.update(f"{file.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def _decode(file: Path, mode: str, resolution: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as opened:
            image = opened.convert(mode)
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side))
        if side != resolution:
            image = image.resize((resolution, resolution), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as error:
        raise DataError(f"{file}: cannot decode image: {error}") from None
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def load_image_folder(root: Path, channels: int, resolution: int,
                      cache_dir: Path | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    files, labels = listing(root)
    key = listing_key(root, files, channels, resolution)
    cached = cache_dir / f"image-folder-{key}.npy" if cache_dir is not None else None
    if cached is not None and cached.is_file():
        try:
            images = np.load(cached, allow_pickle=False)
            if images.shape[0] == len(files):
                log.info("%s: %d images from the decode cache %s", root, len(files), cached)
                return images, labels
        except (OSError, ValueError) as error:
            log.warning("%s: unreadable decode cache, decoding again: %s", cached, error)
    start = time.perf_counter()
    mode = "L" if channels == 1 else "RGB"
    # PIL releases the GIL while decoding: threads use every core.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        images = np.stack(list(pool.map(lambda file: _decode(file, mode, resolution), files)))
    log.info("%s: decoded %d images in %.1fs", root, len(files), time.perf_counter() - start)
    if cached is not None:
        _write_atomically(cached, images)
    return images, labels


def _write_atomically(target: Path, images: np.ndarray) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
        with open(tmp, "wb") as handle:
            np.save(handle, images, allow_pickle=False)
        os.replace(tmp, target)
    except OSError as error:  # a cache is an optimisation: training goes on without it
        log.warning("%s: cannot write the decode cache: %s", target, error)
