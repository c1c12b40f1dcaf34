"""Exponential moving average of the generator's weights.

The decay is defined by a half-life in images, so it does not change meaning with the batch size:
after `half_life_kimg` thousand images, the weight of the current parameters has decayed to 1/2.
"""

from __future__ import annotations

import torch
from torch import nn


def ema_beta(cur_nimg: int, batch_size: int, half_life_kimg: float, rampup: float | None) -> float:
    """Decay for one update of `batch_size` images, at `cur_nimg` images seen."""
    if half_life_kimg <= 0:
        return 0.0
    half_life_nimg = half_life_kimg * 1000.0
    if rampup is not None:
        # Early on, a long half-life would average in the random init; cap it at rampup x progress.
        half_life_nimg = min(half_life_nimg, cur_nimg * rampup)
    if half_life_nimg <= 0:
        return 0.0
    return float(0.5 ** (batch_size / half_life_nimg))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """ema <- beta * ema + (1 - beta) * model for parameters; buffers (BatchNorm statistics,
    spectral-norm vectors) are copied, because an average of running statistics is not the
    statistic of any model."""
    for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
        p_ema.lerp_(p.detach(), 1.0 - beta)
    for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):
        b_ema.copy_(b)
