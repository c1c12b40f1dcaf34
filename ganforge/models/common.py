"""Pieces shared by the generator/discriminator families."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def check_shape(tensor: torch.Tensor, expected: Sequence[int | None], name: str) -> None:
    """Fail loudly at module boundaries; None matches any size (usually the batch)."""
    actual = tuple(tensor.shape)
    if len(actual) != len(expected) or any(e is not None and a != e for a, e in zip(actual, expected, strict=False)):
        shown = tuple("*" if e is None else e for e in expected)
        raise ValueError(f"{name}: expected shape {shown}, got {actual}")


def check_labels(labels: torch.Tensor | None, batch: int, num_classes: int, name: str) -> None:
    if num_classes:
        if labels is None:
            raise ValueError(f"{name}: conditional model needs labels")
        check_shape(labels, (batch,), f"{name} labels")
    elif labels is not None:
        raise ValueError(f"{name}: unconditional model got labels")


def maybe_sn(module: nn.Module, enabled: bool) -> nn.Module:
    if not enabled:
        return module
    return nn.utils.parametrizations.spectral_norm(module)


def num_upsamplings(resolution: int) -> int:
    """Both families start (G) or end (D) at 4x4."""
    steps = resolution.bit_length() - 1 - 2
    if steps < 1 or 4 << steps != resolution:
        raise ValueError(f"resolution must be a power of two >= 8, got {resolution}")
    return steps


class ProjectionHead(nn.Module):
    """Unconditional logit plus the projection term <embed(y), h> (Miyato & Koyama, 2018)."""

    def __init__(self, features: int, num_classes: int, spectral_norm: bool) -> None:
        super().__init__()
        self.linear = maybe_sn(nn.Linear(features, 1), spectral_norm)
        self.embed = maybe_sn(nn.Embedding(num_classes, features), spectral_norm) if num_classes else None

    def forward(self, h: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        out: torch.Tensor = self.linear(h).squeeze(1)
        if self.embed is not None and labels is not None:
            out = out + (self.embed(labels) * h).sum(dim=1)
        return out
