"""Where the uint8 dataset lives, and how a batch of it reaches the device.

A dataset that fits comfortably in GPU memory is copied there once, and a batch is one
index_select on the GPU: nothing crosses PCIe per step. A larger one stays in (pageable) host
memory: a batch is gathered there straight into a pinned buffer and copied asynchronously, so the
copy overlaps the previous step's kernels. Only a batch's worth is pinned, never the dataset: a
node's ranks together would otherwise lock their whole datasets into RAM. Either way a batch is a
pure function of the sampler's indices, so the exact-resume guarantee does not depend on where the
data lives.
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
        labels = self.labels if with_labels else None
        if self.resident:
            return self.images.index_select(0, indices), None if labels is None else labels.index_select(0, indices)
        return self._gather(self.images, indices), None if labels is None else self._gather(labels, indices)

    def _gather(self, source: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        if self.device.type != "cuda":
            return source.index_select(0, indices).to(self.device)
        # The caching host allocator hands this block out again only once its copy has completed.
        staging = torch.empty((len(indices), *source.shape[1:]), dtype=source.dtype, pin_memory=True)
        torch.index_select(source, 0, indices, out=staging)
        return staging.to(self.device, non_blocking=True)
