"""Feature extractors: callables from images in [-1, 1] ([N, C, H, W], C = 1 or 3) to [N, D]."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F

from ganforge.evaluation.domain_classifier import DomainClassifier
from ganforge.evaluation.efficientnet_lite import IMAGENET_MEAN, IMAGENET_STD, load_pretrained


class FeatureExtractor(Protocol):
    name: str  # metric suffix: fd_<name>, kid_<name>, ...

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


def as_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] or float [-1, 1] -> float [-1, 1]; the one place both encodings meet."""
    if images.dtype == torch.uint8:
        return images.float().mul(2 / 255).sub(1)
    return images.float().clamp(-1, 1)


def _rgb01(images: torch.Tensor, resolution: int) -> torch.Tensor:
    x = (images.float() + 1.0) / 2.0
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-1] != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False,
                          antialias=x.shape[-1] > resolution)
    return x


class EffNetLite0Features:
    """1280-d pooled features of ImageNet EfficientNet-Lite0; grayscale is replicated to RGB."""

    name = "effnetlite0"

    def __init__(self, device: torch.device, resolution: int = 224, weights: str | Path | None = None) -> None:
        self.device, self.resolution = device, resolution
        self.model = load_pretrained(weights).to(device)
        self.mean = torch.tensor(IMAGENET_MEAN, device=device)[None, :, None, None]
        self.std = torch.tensor(IMAGENET_STD, device=device)[None, :, None, None]

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = _rgb01(images.to(self.device), self.resolution)
        return self.model.features((x - self.mean) / self.std).float()


class DomainFeatures:
    name = "domain"

    def __init__(self, classifier: DomainClassifier, device: torch.device) -> None:
        self.classifier = classifier.to(device).eval()
        self.device = device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.classifier.features(images.to(self.device).float()).float()
        return features

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        classes: torch.Tensor = self.classifier(images.to(self.device).float()).argmax(dim=1)
        return classes


class TorchScriptFeatures:
    """A user-supplied TorchScript module (e.g. Inception-v3 weights on clusters that have them).
    Contract: input float32 RGB [N, 3, R, R] in [0, 1]; output [N, D]."""

    def __init__(self, path: str | Path, name: str, resolution: int, device: torch.device) -> None:
        self.name, self.resolution, self.device = name, resolution, device
        self.module = torch.jit.load(str(path), map_location=device).eval()

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        out = self.module(_rgb01(images.to(self.device), self.resolution))
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != images.shape[0]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"feature extractor {self.name} must return [N, D] features, got {shape}")
        return out.float()


class EvaluationInterrupted(Exception):
    """The caller asked an evaluation to stop (a preemption): there is no result."""


StopCheck = Callable[[], bool]


def never() -> bool:
    return False


def check_stop(should_stop: StopCheck) -> None:
    if should_stop():
        raise EvaluationInterrupted("evaluation interrupted")


def extract(extractor: FeatureExtractor, images: torch.Tensor, batch_size: int = 256,
            should_stop: StopCheck = never) -> torch.Tensor:
    """Features of uint8 or [-1, 1] images, in batches, on the CPU; `should_stop` is asked before
    every batch, so a long extraction ends within one batch of being asked."""
    features = []
    for batch in images.split(batch_size):
        check_stop(should_stop)
        features.append(extractor(as_unit_float(batch)).cpu())
    return torch.cat(features)
