"""Generator/discriminator families, built from the spec."""

from __future__ import annotations

from torch import nn

from ganforge.api.training_job import ModelSpec
from ganforge.models.dcgan import DCGANDiscriminator, DCGANGenerator
from ganforge.models.sngan import SNGANDiscriminator, SNGANGenerator

__all__ = ["build_models"]


def build_models(spec: ModelSpec, resolution: int, channels: int, num_classes: int) -> tuple[nn.Module, nn.Module]:
    """(G, D); `num_classes` 0 builds unconditional models."""
    sn = spec.regularization.spectral_norm
    if sn is None:
        sn = spec.architecture == "sngan-resnet"
    if spec.architecture == "dcgan":
        g: nn.Module = DCGANGenerator(spec.latent_dim, resolution, channels, spec.width, num_classes)
        d: nn.Module = DCGANDiscriminator(
            resolution, channels, spec.width, num_classes, spectral_norm=sn, batch_norm=spec.loss != "wgan-gp"
        )
    else:
        g = SNGANGenerator(spec.latent_dim, resolution, channels, spec.width, num_classes)
        d = SNGANDiscriminator(resolution, channels, spec.width, num_classes, spectral_norm=sn)
    return g, d
