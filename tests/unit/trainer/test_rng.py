"""The RNG streams a checkpoint carries, and which CUDA generator they restore."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from ganforge.trainer import rng


def _draw() -> tuple[float, float, torch.Tensor]:
    return random.random(), float(np.random.rand()), torch.rand(3)


def test_capture_and_restore_continue_every_cpu_stream() -> None:
    rng.seed_rank(7, 1)
    state = rng.capture_rng(torch.device("cpu"))
    assert state["cuda"] == []
    first = _draw()
    rng.seed_rank(99, 0)
    rng.restore_rng(state, torch.device("cpu"))
    again = _draw()
    assert first[:2] == again[:2] and torch.equal(first[2], again[2])


def test_ranks_get_distinct_streams() -> None:
    rng.seed_rank(7, 0)
    a = _draw()
    rng.seed_rank(7, 1)
    b = _draw()
    assert a[0] != b[0] and not torch.equal(a[2], b[2])


class _FakeCuda:
    """Records which device's generator is read and written (no GPU on this machine)."""

    def __init__(self) -> None:
        self.set: list[tuple[int, int]] = []

    def get_rng_state(self, device: torch.device) -> torch.Tensor:
        return torch.tensor([100 + device.index], dtype=torch.uint8)

    def set_rng_state(self, state: torch.Tensor, device: torch.device) -> None:
        self.set.append((int(state[0]), device.index))


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> _FakeCuda:
    fake = _FakeCuda()
    monkeypatch.setattr(torch.cuda, "get_rng_state", fake.get_rng_state)
    monkeypatch.setattr(torch.cuda, "set_rng_state", fake.set_rng_state)
    return fake


def test_only_the_ranks_own_gpu_generator_is_saved_and_restored(fake_cuda: _FakeCuda) -> None:
    state = rng.capture_rng(torch.device("cuda", 3))
    assert [int(s[0]) for s in state["cuda"]] == [103]
    # Restored onto whatever device the rank has now, even on a node with fewer GPUs.
    rng.restore_rng(state, torch.device("cuda", 0))
    assert fake_cuda.set == [(103, 0)]


def test_a_checkpoint_with_every_visible_gpus_state_restores_the_ranks_own(fake_cuda: _FakeCuda) -> None:
    state = rng.capture_rng(torch.device("cpu"))
    state["cuda"] = [torch.tensor([100 + i], dtype=torch.uint8) for i in range(8)]  # the old format
    rng.restore_rng(state, torch.device("cuda", 5))
    assert fake_cuda.set == [(105, 5)]
    fake_cuda.set.clear()
    state["cuda"] = state["cuda"][:2]  # fewer states than the device index: nothing to restore
    rng.restore_rng(state, torch.device("cuda", 5))
    assert fake_cuda.set == []
