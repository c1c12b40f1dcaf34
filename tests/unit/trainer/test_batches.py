"""A batch is the same whether the dataset lives on the device or streams from the host."""

from __future__ import annotations

import pytest
import torch

from ganforge.trainer import batches
from ganforge.trainer.batches import BatchSource


def test_resident_and_streamed_batches_are_identical() -> None:
    images = torch.randint(0, 256, (50, 1, 8, 8), dtype=torch.uint8)
    labels = torch.arange(50) % 7
    indices = torch.tensor([3, 49, 0, 3, 17])
    resident = BatchSource(images, labels, torch.device("cpu"), resident=True)
    streamed = BatchSource(images, labels, torch.device("cpu"), resident=False)
    a, b = resident.take(indices, with_labels=True), streamed.take(indices, with_labels=True)
    assert torch.equal(a[0], b[0]) and torch.equal(a[0], images[indices])
    assert a[1] is not None and b[1] is not None and torch.equal(a[1], b[1])
    assert resident.take(indices, with_labels=False)[1] is None


def test_a_dataset_beyond_its_share_of_gpu_memory_stays_on_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """The decision alone (no GPU here): a quarter of the device's memory is the limit."""
    made: list[bool] = []
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (0, 4000))
    monkeypatch.setattr(BatchSource, "__init__", lambda self, images, labels, device, resident: made.append(resident))
    cuda = torch.device("cuda", 0)
    BatchSource.for_device(torch.zeros(1000, dtype=torch.uint8), None, cuda)
    BatchSource.for_device(torch.zeros(1001, dtype=torch.uint8), None, cuda)
    BatchSource.for_device(torch.zeros(10**6, dtype=torch.uint8), None, torch.device("cpu"))
    assert made == [True, False, True] and batches.DEVICE_SHARE == 0.25
