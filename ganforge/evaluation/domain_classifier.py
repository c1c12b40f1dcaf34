"""A small classifier that ganforge trains on the labelled training set, used as a second,
in-domain feature space (ImageNet features know little about 32x32 grayscale clothing) and as the
class predictor behind the mode-collapse signal. Cached by dataset hash."""

from __future__ import annotations

import io
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

VERSION = 2  # bump when the architecture or recipe changes, so stale caches are not reused
FEATURE_DIM = 128


class DomainClassifier(nn.Module):
    def __init__(self, channels: int, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.channels, self.num_classes = channels, num_classes
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, 1, 1), nn.BatchNorm2d(width), nn.ReLU(True), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, 1, 1), nn.BatchNorm2d(2 * width), nn.ReLU(True), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, 1, 1), nn.BatchNorm2d(4 * width), nn.ReLU(True),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(4 * width * 16, FEATURE_DIM), nn.ReLU(True),
        )
        self.classifier = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations of images in [-1, 1]."""
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"domain classifier expects [N, {self.channels}, H, W], got {tuple(x.shape)}")
        out: torch.Tensor = self.body(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.classifier(self.features(x))
        return out


# The trained classifier travels beside the reference statistics (and so with every exported
# artifact): its features are a feature space of the reference, and the canary gate needs them
# without the dataset.
CLASSIFIER_FILE = "domain-classifier.pt"


@dataclass
class TrainedClassifier:
    model: DomainClassifier
    accuracy: float  # on the held-out split (or a held-back slice of train when there is none)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        torch.save({"channels": self.model.channels, "num_classes": self.model.num_classes,
                    "accuracy": self.accuracy, "state": self.model.state_dict()}, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> TrainedClassifier:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        model = DomainClassifier(int(payload["channels"]), int(payload["num_classes"]))
        model.load_state_dict(payload["state"])
        return cls(model.eval().requires_grad_(False), float(payload["accuracy"]))


def train_classifier(
    images: torch.Tensor, labels: torch.Tensor, num_classes: int, held_out: tuple[torch.Tensor, torch.Tensor] | None,
    seed: int = 0, steps: int = 300, batch_size: int = 96, device: torch.device | None = None,
) -> TrainedClassifier:
    device = device or torch.device("cpu")
    generator = torch.Generator().manual_seed(seed)
    if held_out is None:
        order = torch.randperm(images.shape[0], generator=generator)
        cut = max(1, images.shape[0] // 10)
        held_out = images[order[:cut]], labels[order[:cut]]
        images, labels = images[order[cut:]], labels[order[cut:]]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DomainClassifier(images.shape[1], num_classes).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, images.shape[0], (batch_size,), generator=generator)
        x = images[idx].to(device).float().mul(2 / 255).sub(1)
        # Random horizontal flips: garments are mirror-symmetric, and the classifier should not
        # reward a generator for copying orientation quirks.
        flip = torch.rand(batch_size, generator=generator) < 0.5
        x[flip.to(device)] = x[flip.to(device)].flip(-1)
        loss = F.cross_entropy(model(x), labels[idx].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval().requires_grad_(False)
    correct = 0
    with torch.no_grad():
        for xb, yb in zip(held_out[0].split(1024), held_out[1].split(1024), strict=True):
            pred = model(xb.to(device).float().mul(2 / 255).sub(1)).argmax(1).cpu()
            correct += int((pred == yb).sum())
    return TrainedClassifier(model, correct / max(1, held_out[0].shape[0]))


def load_or_train(
    cache_dir: Path, dataset_hash: str, images: torch.Tensor, labels: torch.Tensor, num_classes: int,
    held_out: tuple[torch.Tensor, torch.Tensor] | None, device: torch.device, steps: int = 300,
) -> TrainedClassifier:
    path = cache_dir / f"domain-classifier-v{VERSION}-{dataset_hash}-{steps}.pt"
    if path.exists():
        try:
            cached = TrainedClassifier.from_bytes(path.read_bytes())
            return TrainedClassifier(cached.model.to(device), cached.accuracy)
        except Exception as error:
            log.warning("ignoring unreadable cached classifier %s: %s", path, error)
    start = time.perf_counter()
    trained = train_classifier(images, labels, num_classes, held_out, steps=steps, device=device)
    log.info("trained the domain classifier in %.1fs: held-out accuracy %.3f", time.perf_counter() - start,
             trained.accuracy)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    tmp.write_bytes(trained.to_bytes())
    os.replace(tmp, path)
    return trained
