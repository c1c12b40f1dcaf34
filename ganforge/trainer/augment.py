"""Differentiable augmentation of what D sees (DiffAugment, Zhao et al. 2020) and x-flips.

Every transform is applied per sample with its own random draw, from the process's torch RNG on the
images' device: the draws are part of the RNG state every checkpoint carries, so a resumed run
augments exactly as the uninterrupted one would have. Images are in [-1, 1], [N, C, H, W].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def _uniform(x: torch.Tensor) -> torch.Tensor:
    return torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype)


def color(x: torch.Tensor) -> torch.Tensor:
    x = x + (_uniform(x) - 0.5)  # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_uniform(x) * 2) + mean  # saturation (a no-op for one channel)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(x) + 0.5) + mean  # contrast


def translation(x: torch.Tensor, ratio: float = TRANSLATION_RATIO) -> torch.Tensor:
    """Shift each image by up to ratio x its size in each direction, filling with zeros (mid-grey)."""
    n, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sy, sy + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-sx, sx + 1, (n, 1, 1), device=x.device)
    batch, rows, cols = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(h, device=x.device),
                                       torch.arange(w, device=x.device), indexing="ij")
    rows = (rows + dy + 1).clamp(0, h + 1)
    cols = (cols + dx + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])  # the one-pixel zero border is where shifted-out pixels read from
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, ratio: float = CUTOUT_RATIO) -> torch.Tensor:
    """Zero a square of ratio x the image size at a random place in each image."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device)
    batch, rows, cols = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(ch, device=x.device),
                                       torch.arange(cw, device=x.device), indexing="ij")
    rows = (rows + oy - ch // 2).clamp(0, h - 1)
    cols = (cols + ox - cw // 2).clamp(0, w - 1)
    mask = torch.ones(n, h, w, device=x.device, dtype=x.dtype)
    mask[batch, rows, cols] = 0
    return x * mask.unsqueeze(1)


def xflip(x: torch.Tensor) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < 0.5
    return torch.where(flip, x.flip(3), x)


TRANSFORMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "color": color, "translation": translation, "cutout": cutout,
}


class Augment:
    """The spec's augmentation as one callable; the identity when nothing is configured."""

    def __init__(self, policy: Sequence[str], flip: bool) -> None:
        unknown = [name for name in policy if name not in TRANSFORMS]
        if unknown:
            raise ValueError(f"unknown augmentation {unknown}; known: {sorted(TRANSFORMS)}")
        self.steps = ([xflip] if flip else []) + [TRANSFORMS[name] for name in policy]

    @property
    def enabled(self) -> bool:
        return bool(self.steps)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1
        for step in self.steps:
            x = step(x)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x
