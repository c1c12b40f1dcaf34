"""DCGAN (Radford et al., 2016) at any power-of-two resolution, optionally class-conditional.

Conditioning: G concatenates a learned class embedding to z; D uses a projection head on its
globally pooled 4x4 features. BatchNorm in D is replaced by spectral norm when asked, and dropped
for WGAN-GP (a per-sample gradient penalty is ill-defined under batch statistics).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from ganforge.models.common import ProjectionHead, check_labels, check_shape, maybe_sn, num_upsamplings

MAX_CHANNELS = 512


class DCGANGenerator(nn.Module):
    def __init__(self, latent_dim: int, resolution: int, channels: int, width: int, num_classes: int = 0) -> None:
        super().__init__()
        self.latent_dim, self.resolution = latent_dim, resolution
        self.channels, self.num_classes = channels, num_classes
        steps = num_upsamplings(resolution)
        widths = [min(width * 2 ** (steps - 1 - i), MAX_CHANNELS) for i in range(steps)]
        embed_dim = min(latent_dim, 64) if num_classes else 0
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes else None
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim + embed_dim, widths[0], 4, 1, 0, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(True),
        ]
        for c_in, c_out in itertools.pairwise(widths):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(_dcgan_init)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        batch = z.shape[0]
        check_shape(z, (None, self.latent_dim), "G input z")
        check_labels(labels, batch, self.num_classes, "G")
        if self.embed is not None and labels is not None:
            z = torch.cat([z, self.embed(labels).to(z.dtype)], dim=1)
        out: torch.Tensor = self.net(z[:, :, None, None])
        check_shape(out, (batch, self.channels, self.resolution, self.resolution), "G output")
        return out


class DCGANDiscriminator(nn.Module):
    def __init__(
        self, resolution: int, channels: int, width: int, num_classes: int = 0,
        spectral_norm: bool = False, batch_norm: bool = True,
    ) -> None:
        super().__init__()
        self.resolution, self.channels, self.num_classes = resolution, channels, num_classes
        steps = num_upsamplings(resolution)
        widths = [min(width * 2**i, MAX_CHANNELS) for i in range(steps)]
        layers: list[nn.Module] = [
            maybe_sn(nn.Conv2d(channels, widths[0], 4, 2, 1), spectral_norm), nn.LeakyReLU(0.2, True)
        ]
        use_bn = batch_norm and not spectral_norm
        for c_in, c_out in itertools.pairwise(widths):
            layers.append(maybe_sn(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=not use_bn), spectral_norm))
            if use_bn:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(0.2, True))
        self.features = nn.Sequential(*layers)
        self.head = ProjectionHead(widths[-1] * 16, num_classes, spectral_norm)
        self.apply(_dcgan_init)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        batch = x.shape[0]
        check_shape(x, (None, self.channels, self.resolution, self.resolution), "D input")
        check_labels(labels, batch, self.num_classes, "D")
        h = self.features(x).flatten(1)
        out: torch.Tensor = self.head(h, labels)
        check_shape(out, (batch,), "D output")
        return out


def _dcgan_init(module: nn.Module) -> None:
    # The DCGAN paper's N(0, 0.02) init; spectral-normed layers keep their own scale anyway.
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
        parametrizations = getattr(module, "parametrizations", None)
        target = parametrizations.weight.original if parametrizations is not None else module.weight
        nn.init.normal_(target, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d) and module.affine:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
