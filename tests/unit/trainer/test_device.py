"""Which GPU a rank takes (a fake torch.cuda: this machine has none)."""

from __future__ import annotations

import pytest
import torch

from ganforge.trainer.distributed import pick_device
from ganforge.trainer.errors import ConfigError


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    chosen: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    return chosen


def test_each_rank_of_a_pod_takes_the_gpu_of_its_local_rank(two_gpus: list[int]) -> None:
    devices = [pick_device("auto", 2, local_rank, rank=4 + local_rank) for local_rank in (0, 1)]
    assert devices == [torch.device("cuda", 0), torch.device("cuda", 1)]
    assert two_gpus == [0, 1]


def test_more_ranks_than_gpus_in_a_pod_is_refused_not_doubled_up(two_gpus: list[int],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(ConfigError, match=r"LOCAL_RANK=2 but this node shows 2 GPU\(s\).*CUDA_VISIBLE_DEVICES=0,1"):
        pick_device("cuda", 3, 2, rank=2)
    assert two_gpus == []


def test_without_local_rank_the_global_rank_picks_the_gpu(two_gpus: list[int]) -> None:
    assert pick_device("cuda", 1, None, rank=3) == torch.device("cuda", 1)


def test_cpu_whenever_asked_or_no_gpu_is_requested(two_gpus: list[int]) -> None:
    assert pick_device("cpu", 2, 5) == torch.device("cpu")
    assert pick_device("auto", 0, 5) == torch.device("cpu")
    assert two_gpus == []
