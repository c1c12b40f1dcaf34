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
    """The spec's augmentation as one callable; the identity when nothing is configured.

    x-flips (valid images themselves) always apply; each policy transform applies to each image
    with `probability`, which the adaptive control may move between steps. At 0 a transform draws
    nothing, at 1 it draws no choice: the random draws follow from the probability, which every
    checkpoint carries."""

    def __init__(self, policy: Sequence[str], flip: bool, probability: float = 1.0) -> None:
        unknown = [name for name in policy if name not in TRANSFORMS]
        if unknown:
            raise ValueError(f"unknown augmentation {unknown}; known: {sorted(TRANSFORMS)}")
        self.flip = flip
        self.transforms = [TRANSFORMS[name] for name in policy]
        self.probability = probability

    @property
    def enabled(self) -> bool:
        return self.flip or bool(self.transforms)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1
        if self.flip:
            x = xflip(x)
        p = self.probability
        for transform in self.transforms if p > 0 else ():
            if p >= 1:
                x = transform(x)
            else:
                chosen = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < p
                x = torch.where(chosen, transform(x), x)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class AdaptiveProbability:
    """ADA's integral control (Karras et al. 2020): after every step, p moves by the step's images /
    (speed_kimg x 1000) towards more augmentation when D's real logits are positive on more than
    `target` of the images on balance (r = mean sign > target: D is overfitting), towards less
    otherwise; p stays in [0, 1]. p itself is the Augment's: this only says where it goes next."""

    def __init__(self, target: float, speed_kimg: float) -> None:
        self.target = target
        self.speed_images = speed_kimg * 1000

    def next(self, probability: float, real_sign: float, images: int) -> float:
        direction = 1.0 if real_sign > self.target else -1.0 if real_sign < self.target else 0.0
        return min(1.0, max(0.0, probability + direction * images / self.speed_images))
