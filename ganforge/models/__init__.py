"""Generator/discriminator families, built from the spec."""

from __future__ import annotations

from torch import nn

from ganforge.api.training_job import ModelSpec
from ganforge.models.dcgan import DCGANDiscriminator, DCGANGenerator
from ganforge.models.sngan import SNGANDiscriminator, SNGANGenerator

__all__ = ["build_generator", "build_models"]


def build_generator(spec: ModelSpec, resolution: int, channels: int, num_classes: int) -> nn.Module:
    """G alone, as export rebuilds it from a checkpoint; `num_classes` 0 is unconditional."""
    if spec.architecture == "dcgan":
        return DCGANGenerator(spec.latent_dim, resolution, channels, spec.width, num_classes)
    return SNGANGenerator(spec.latent_dim, resolution, channels, spec.width, num_classes)


def build_models(spec: ModelSpec, resolution: int, channels: int, num_classes: int) -> tuple[nn.Module, nn.Module]:
    """(G, D); `num_classes` 0 builds unconditional models."""
    sn = spec.regularization.spectral_norm
    if sn is None:
        sn = spec.architecture == "sngan-resnet"
    g = build_generator(spec, resolution, channels, num_classes)
    if spec.architecture == "dcgan":
        d: nn.Module = DCGANDiscriminator(
            resolution, channels, spec.width, num_classes, spectral_norm=sn, batch_norm=spec.loss != "wgan-gp"
        )
    else:
        d = SNGANDiscriminator(resolution, channels, spec.width, num_classes, spectral_norm=sn)
    return g, d
