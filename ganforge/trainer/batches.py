"""Where the uint8 dataset lives, and how a batch of it reaches the device.

A dataset that fits comfortably in GPU memory is copied there once, and a batch is one
index_select on the GPU: nothing crosses PCIe per step. A larger one stays in host memory: a
batch is gathered there, in pinned memory, and copied asynchronously, so the copy overlaps the
previous step's kernels. Either way a batch is a pure function of the sampler's indices, so the
exact-resume guarantee does not depend on where the data lives.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

# The share of a GPU's memory the dataset may occupy; the rest is for the models and activations.
DEVICE_SHARE = 0.25


class BatchSource:
    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None, device: torch.device,
                 resident: bool) -> None:
        self.device, self.resident = device, resident
        home = device if resident else torch.device("cpu")
        self.images = images.to(home)
        self.labels = labels.to(home) if labels is not None else None
        if not resident and device.type == "cuda":
            self.images = self.images.pin_memory()

    @classmethod
    def for_device(cls, images: torch.Tensor, labels: torch.Tensor | None, device: torch.device) -> BatchSource:
        if device.type != "cuda":
            return cls(images, labels, device, resident=True)
        _, total = torch.cuda.mem_get_info(device)
        resident = images.numel() * images.element_size() <= DEVICE_SHARE * total
        if not resident:
            log.info("dataset of %.1f GiB exceeds %.0f%% of the GPU's %.1f GiB: batches stream from pinned host "
                     "memory", images.numel() / 2**30, 100 * DEVICE_SHARE, total / 2**30)
        return cls(images, labels, device, resident)

    @property
    def index_device(self) -> torch.device:
        """Where the sampler's indices should be: beside the data they index."""
        return self.images.device

    def take(self, indices: torch.Tensor, with_labels: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 images (and labels) at `indices`, on the training device."""
        images = self.images.index_select(0, indices)
        labels = self.labels.index_select(0, indices) if (with_labels and self.labels is not None) else None
        if not self.resident:
            images = self._to_device(images)
            labels = self._to_device(labels) if labels is not None else None
        return images, labels

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            # The caching host allocator keeps a pinned block until its copy has completed.
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)
