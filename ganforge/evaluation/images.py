"""Generated images as people and metrics see them: uint8 pixels and sample grids. Shared by the
trainer (its sample grids) and serving (`ganforge generate`, images from Triton)."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import torch


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8, rounding rather than truncating so a round trip is stable."""
    return images.detach().float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def image_grid(images: torch.Tensor, columns: int) -> torch.Tensor:
    """uint8 [N, C, H, W] -> uint8 [C, rows*H, columns*W]."""
    n, c, h, w = images.shape
    rows = math.ceil(n / columns)
    grid = torch.zeros(c, rows * h, columns * w, dtype=torch.uint8)
    for i in range(n):
        r, col = divmod(i, columns)
        grid[:, r * h : (r + 1) * h, col * w : (col + 1) * w] = images[i]
    return grid


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def save_image_grid(images: torch.Tensor, path: Path, columns: int) -> None:
    """uint8 [N, C, H, W] as one PNG, written atomically."""
    from PIL import Image

    grid = image_grid(images.cpu(), columns)
    array = grid[0].numpy() if grid.shape[0] == 1 else grid.permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
