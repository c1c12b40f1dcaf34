from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ganforge.trainer.ema import ema_beta, update_ema


def test_half_life_means_half_after_that_many_images() -> None:
    batch, half_life_kimg = 32, 2.0
    beta = ema_beta(cur_nimg=10**9, batch_size=batch, half_life_kimg=half_life_kimg, rampup=None)
    steps = half_life_kimg * 1000 / batch
    assert beta**steps == pytest.approx(0.5, rel=1e-12)


def test_rampup_caps_the_half_life_early_on() -> None:
    early = ema_beta(cur_nimg=1000, batch_size=10, half_life_kimg=10.0, rampup=0.05)
    assert early == pytest.approx(0.5 ** (10 / 50))
    late = ema_beta(cur_nimg=10**7, batch_size=10, half_life_kimg=10.0, rampup=0.05)
    assert late == pytest.approx(0.5 ** (10 / 10000))
    assert ema_beta(0, 10, 10.0, 0.05) == 0.0
    assert ema_beta(10**6, 10, 0.0, None) == 0.0


def test_update_averages_parameters_and_copies_buffers() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    start = [p.detach().clone() for p in ema.parameters()]
    model[1].running_mean.fill_(3.0)
    model[1].num_batches_tracked.fill_(7)
    update_ema(ema, model, beta=0.25)
    for p_ema, p0, p in zip(ema.parameters(), start, model.parameters(), strict=True):
        assert torch.allclose(p_ema, 0.25 * p0 + 0.75 * p, atol=1e-7)
    assert torch.equal(ema[1].running_mean, torch.full((4,), 3.0))
    assert int(ema[1].num_batches_tracked) == 7


def test_beta_zero_copies_exactly() -> None:
    torch.manual_seed(1)
    model, ema = nn.Linear(5, 5), nn.Linear(5, 5)
    update_ema(ema, model, beta=0.0)
    assert all(torch.equal(a, b) for a, b in zip(ema.parameters(), model.parameters(), strict=True))


def test_the_multi_tensor_update_equals_the_per_tensor_lerp_bit_for_bit() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.Linear(7, 2))
    ema = copy.deepcopy(model)
    for p in model.parameters():
        p.data.add_(torch.randn_like(p))
    expected = [p_ema.detach().clone().lerp_(p.detach(), 1.0 - 0.37) for p_ema, p in
                zip(ema.parameters(), model.parameters(), strict=True)]
    update_ema(ema, model, beta=0.37)
    for got, want in zip(ema.parameters(), expected, strict=True):
        assert torch.equal(got, want)


def test_one_multi_tensor_launch_updates_every_parameter(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU hot path: one foreach kernel for all of G's parameters, not one launch per tensor."""
    model = nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.Linear(7, 2))
    ema = copy.deepcopy(model)
    calls: list[int] = []
    foreach_lerp = torch._foreach_lerp_

    def counted(tensors: list[torch.Tensor], *args: object) -> None:
        calls.append(len(tensors))
        foreach_lerp(tensors, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(torch, "_foreach_lerp_", counted)
    monkeypatch.setattr(torch.Tensor, "lerp_", lambda *_: pytest.fail("a per-tensor lerp_"))
    update_ema(ema, model, beta=0.5)
    assert calls == [len(list(model.parameters()))]
