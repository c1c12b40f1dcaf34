"""FlatGradients: autograd writes every gradient straight into one flat buffer, in each
parameter's own memory layout, and the values are those of a plain backward."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ganforge.trainer.distributed import DistContext, FlatGradients


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3),
                         nn.Flatten(), nn.Linear(4 * 6 * 6, 1))


def _backward(model: nn.Module, channels_last: bool) -> None:
    torch.manual_seed(1)
    x = torch.randn(5, 3, 8, 8)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    model(x).square().mean().backward()


@pytest.mark.parametrize("channels_last", [False, True])
def test_gradients_land_in_the_buffer_with_the_parameter_layout(channels_last: bool) -> None:
    reference, model = _model(), _model()
    if channels_last:
        reference.to(memory_format=torch.channels_last)
        model.to(memory_format=torch.channels_last)
    flat = FlatGradients(list(model.parameters()), extra=2, device=torch.device("cpu"))
    _backward(reference, channels_last)
    _backward(model, channels_last)
    flat.all_reduce_mean(DistContext())

    storage = flat.buffer.untyped_storage().data_ptr()
    offset = 0
    for (name, p), ref in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert p.grad is not None and ref.grad is not None
        assert p.grad.untyped_storage().data_ptr() == storage, name
        assert p.grad.stride() == p.stride(), name
        torch.testing.assert_close(p.grad, ref.grad, rtol=0, atol=0)
        # The flat slice holds the same numbers, in the parameter's memory order.
        expected = ref.grad.permute(0, 2, 3, 1).flatten() if channels_last and p.dim() == 4 else ref.grad.flatten()
        torch.testing.assert_close(flat.grads[offset: offset + p.numel()], expected, rtol=0, atol=0)
        offset += p.numel()
    torch.testing.assert_close(flat.grads.norm(), torch.cat([r.grad.flatten() for r in reference.parameters()
                                                             if r.grad is not None]).norm())


def test_zero_clears_gradients_and_keeps_the_views() -> None:
    model = _model().to(memory_format=torch.channels_last)
    flat = FlatGradients(list(model.parameters()), extra=1, device=torch.device("cpu"))
    _backward(model, channels_last=True)
    views = [p.grad for p in model.parameters()]
    flat.zero()
    assert flat.buffer.abs().sum().item() == 0
    assert all(p.grad is v for p, v in zip(model.parameters(), views, strict=True))


def test_a_gradient_stored_elsewhere_is_pulled_back() -> None:
    model = _model()
    twin = copy.deepcopy(model)
    flat = FlatGradients(list(model.parameters()), extra=0, device=torch.device("cpu"))
    _backward(twin, channels_last=False)
    first = next(model.parameters())
    first.grad = next(twin.parameters()).grad.clone()  # e.g. a hook that replaced .grad
    flat.collect()
    assert first.grad.untyped_storage().data_ptr() == flat.buffer.untyped_storage().data_ptr()
    torch.testing.assert_close(first.grad, next(twin.parameters()).grad)


def test_unsupported_layouts_and_dtypes_are_refused() -> None:
    odd = nn.Parameter(torch.zeros(4, 6).t())
    with pytest.raises(TypeError, match="memory layout"):
        FlatGradients([odd], extra=0, device=torch.device("cpu"))
    with pytest.raises(TypeError, match="float32"):
        FlatGradients([nn.Parameter(torch.zeros(3, dtype=torch.float64))], extra=0, device=torch.device("cpu"))
