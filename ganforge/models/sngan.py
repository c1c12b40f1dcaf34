"""SNGAN-style ResNet generator and spectrally normalised discriminator (Miyato et al., 2018).

Conditioning: class-conditional BatchNorm in G, projection head in D. Channel count is 2x `width`
in every block, as in the CIFAR configuration of the paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ganforge.models.common import ProjectionHead, check_labels, check_shape, maybe_sn, num_upsamplings


class ConditionalBatchNorm(nn.Module):
    """BatchNorm whose gain and bias come from the class (identity at init)."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.bn = nn.BatchNorm2d(channels, affine=not num_classes)
        if num_classes:
            self.gain = nn.Embedding(num_classes, channels)
            self.bias = nn.Embedding(num_classes, channels)
            nn.init.ones_(self.gain.weight)
            nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        out: torch.Tensor = self.bn(x)
        if self.num_classes and labels is not None:
            out = out * self.gain(labels)[:, :, None, None] + self.bias(labels)[:, :, None, None]
        return out


class UpBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, num_classes: int) -> None:
        super().__init__()
        self.bn1 = ConditionalBatchNorm(c_in, num_classes)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.bn2 = ConditionalBatchNorm(c_out, num_classes)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn1(x, labels)), scale_factor=2.0, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h), labels)))
        out: torch.Tensor = h + self.shortcut(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return out


class DownBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, downsample: bool, first: bool, sn: bool) -> None:
        super().__init__()
        self.first, self.downsample = first, downsample
        self.conv1 = maybe_sn(nn.Conv2d(c_in, c_out, 3, 1, 1), sn)
        self.conv2 = maybe_sn(nn.Conv2d(c_out, c_out, 3, 1, 1), sn)
        self.shortcut = maybe_sn(nn.Conv2d(c_in, c_out, 1), sn) if (c_in != c_out or downsample) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The first block sees raw pixels, so it skips the leading ReLU (the paper's "optimized block").
        h = x if self.first else F.relu(x)
        h = self.conv2(F.relu(self.conv1(h)))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        shortcut = x
        if self.first:
            shortcut = self.shortcut(F.avg_pool2d(x, 2)) if self.shortcut is not None else x
        elif self.shortcut is not None:
            shortcut = self.shortcut(x)
            if self.downsample:
                shortcut = F.avg_pool2d(shortcut, 2)
        out: torch.Tensor = h + shortcut
        return out


class SNGANGenerator(nn.Module):
    def __init__(self, latent_dim: int, resolution: int, channels: int, width: int, num_classes: int = 0) -> None:
        super().__init__()
        self.latent_dim, self.resolution = latent_dim, resolution
        self.channels, self.num_classes = channels, num_classes
        self.ch = 2 * width
        self.linear = nn.Linear(latent_dim, 16 * self.ch)
        self.blocks = nn.ModuleList(UpBlock(self.ch, self.ch, num_classes) for _ in range(num_upsamplings(resolution)))
        self.bn = nn.BatchNorm2d(self.ch)
        self.out = nn.Conv2d(self.ch, channels, 3, 1, 1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        batch = z.shape[0]
        check_shape(z, (None, self.latent_dim), "G input z")
        check_labels(labels, batch, self.num_classes, "G")
        h = self.linear(z).view(batch, self.ch, 4, 4)
        for block in self.blocks:
            h = block(h, labels)
        out = torch.tanh(self.out(F.relu(self.bn(h))))
        check_shape(out, (batch, self.channels, self.resolution, self.resolution), "G output")
        return out


class SNGANDiscriminator(nn.Module):
    def __init__(
        self, resolution: int, channels: int, width: int, num_classes: int = 0, spectral_norm: bool = True
    ) -> None:
        super().__init__()
        self.resolution, self.channels, self.num_classes = resolution, channels, num_classes
        ch = 2 * width
        downs = num_upsamplings(resolution)
        blocks = [DownBlock(channels, ch, True, True, spectral_norm)]
        blocks += [DownBlock(ch, ch, True, False, spectral_norm) for _ in range(downs - 1)]
        blocks += [DownBlock(ch, ch, False, False, spectral_norm)]
        self.blocks = nn.Sequential(*blocks)
        self.head = ProjectionHead(ch, num_classes, spectral_norm)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        batch = x.shape[0]
        check_shape(x, (None, self.channels, self.resolution, self.resolution), "D input")
        check_labels(labels, batch, self.num_classes, "D")
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))
        out: torch.Tensor = self.head(h, labels)
        check_shape(out, (batch,), "D output")
        return out
