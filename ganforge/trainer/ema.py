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
    # One multi-tensor kernel for all parameters (and one for buffers) on a GPU instead of a
    # launch per tensor; the same per-element lerp, so the result is unchanged.
    ema_params: list[torch.Tensor] = list(ema.parameters())
    params = [p.detach() for p in model.parameters()]
    if len(ema_params) != len(params):
        raise ValueError(f"EMA has {len(ema_params)} parameters, the model {len(params)}")
    torch._foreach_lerp_(ema_params, params, 1.0 - beta)
    ema_buffers, buffers = list(ema.buffers()), list(model.buffers())
    if ema_buffers:
        torch._foreach_copy_(ema_buffers, buffers)
