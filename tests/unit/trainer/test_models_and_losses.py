from __future__ import annotations

import math

import pytest
import torch

from ganforge.api.training_job import ModelSpec
from ganforge.models import build_models
from ganforge.trainer import losses


@pytest.mark.parametrize("architecture", ["dcgan", "sngan-resnet"])
@pytest.mark.parametrize(("resolution", "channels", "classes"), [(16, 1, 0), (32, 3, 5)])
def test_shapes_at_module_boundaries(architecture: str, resolution: int, channels: int, classes: int) -> None:
    spec = ModelSpec(architecture=architecture, latent_dim=8, width=4)  # type: ignore[arg-type]
    g, d = build_models(spec, resolution, channels, classes)
    labels = torch.arange(3) % classes if classes else None
    images = g(torch.randn(3, 8), labels)
    assert images.shape == (3, channels, resolution, resolution)
    assert images.abs().max() <= 1.0
    assert d(images, labels).shape == (3,)
    with pytest.raises(ValueError, match="G input z: expected shape"):
        g(torch.randn(3, 9), labels)
    with pytest.raises(ValueError, match="D input: expected shape"):
        d(torch.randn(3, channels, resolution * 2, resolution * 2), labels)
    if classes:
        with pytest.raises(ValueError, match="needs labels"):
            d(images, None)


def test_spectral_norm_default_follows_architecture() -> None:
    _, d_dcgan = build_models(ModelSpec(architecture="dcgan", width=4), 16, 1, 0)
    _, d_sngan = build_models(ModelSpec(architecture="sngan-resnet", width=4), 16, 1, 0)
    has_sn = [any("parametrizations" in name for name, _ in d.named_parameters()) for d in (d_dcgan, d_sngan)]
    assert has_sn == [False, True]


def test_loss_values() -> None:
    zero = torch.zeros(4)
    assert losses.d_loss("nonsaturating", zero, zero).item() == pytest.approx(2 * math.log(2))
    assert losses.g_loss("nonsaturating", zero).item() == pytest.approx(math.log(2))
    assert losses.d_loss("hinge", torch.full((4,), 2.0), torch.full((4,), -2.0)).item() == 0.0
    assert losses.d_loss("hinge", zero, zero).item() == 2.0
    assert losses.d_loss("wgan-gp", torch.ones(4), torch.zeros(4)).item() == -1.0
    assert losses.g_loss("hinge", torch.ones(4)).item() == -1.0


def test_penalties() -> None:
    real = torch.randn(5, 1, 4, 4, requires_grad=True)
    # D(x) = 3 * sum(x): gradient 3 everywhere, squared norm 9 * 16.
    assert losses.r1_penalty(real, 3 * real.sum(dim=(1, 2, 3))).item() == pytest.approx(144.0)
    gp = losses.gradient_penalty(lambda x: x.sum(dim=(1, 2, 3)), torch.randn(5, 1, 2, 2), torch.randn(5, 1, 2, 2))
    assert gp.item() == pytest.approx(1.0)  # ||grad|| = 2, (2 - 1)^2
