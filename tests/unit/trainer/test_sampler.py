from __future__ import annotations

import pytest
import torch

from ganforge.trainer.sampler import InfiniteSampler


def _draw(sampler: InfiniteSampler, batches: int, size: int) -> list[list[int]]:
    return [sampler.next_indices(size).tolist() for _ in range(batches)]


def test_same_seed_same_stream_different_seed_different_stream() -> None:
    a = _draw(InfiniteSampler(100, 0, 1, seed=3), 10, 7)
    b = _draw(InfiniteSampler(100, 0, 1, seed=3), 10, 7)
    c = _draw(InfiniteSampler(100, 0, 1, seed=4), 10, 7)
    assert a == b
    assert a != c


def test_ranks_partition_each_epoch() -> None:
    world, size = 3, 30
    seen = []
    for rank in range(world):
        sampler = InfiniteSampler(size, rank, world, seed=0)
        seen.append(sampler.next_indices(size // world).tolist())
    flat = sorted(i for part in seen for i in part)
    assert flat == list(range(size))


def test_epochs_are_reshuffled_and_crossing_is_seamless() -> None:
    sampler = InfiniteSampler(10, 0, 1, seed=0)
    first, second = sampler.next_indices(10).tolist(), sampler.next_indices(10).tolist()
    assert sorted(first) == sorted(second) == list(range(10))
    assert first != second
    again = InfiniteSampler(10, 0, 1, seed=0)
    assert again.next_indices(7).tolist() + again.next_indices(13).tolist() == first + second


def test_resume_from_state_continues_the_exact_stream() -> None:
    straight = InfiniteSampler(50, 1, 2, seed=9)
    expected = _draw(straight, 12, 8)
    first = InfiniteSampler(50, 1, 2, seed=9)
    head = _draw(first, 5, 8)
    state = first.state_dict()
    resumed = InfiniteSampler(50, 1, 2, seed=9)
    resumed.load_state_dict(state)
    assert head + _draw(resumed, 7, 8) == expected
    assert state["epoch"] == 1 and state["offset"] == 40 - 25


def test_mismatched_state_is_rejected() -> None:
    sampler = InfiniteSampler(50, 0, 1, seed=1)
    with pytest.raises(ValueError, match="50 items/seed 2"):
        sampler.load_state_dict({**sampler.state_dict(), "seed": 2})
    assert isinstance(sampler.next_indices(3), torch.Tensor)
    with pytest.raises(ValueError):
        InfiniteSampler(1, 0, 2, seed=0)


def test_an_epoch_is_drawn_once_however_many_batches_it_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    # On a GPU the drawn epoch is what crosses to the device (pinned, non-blocking): once per epoch,
    # never per step. tests/gpu checks the device side.
    drawn: list[int] = []
    real_randperm = torch.randperm

    def counting_randperm(n: int, **kwargs: object) -> torch.Tensor:
        drawn.append(n)
        return real_randperm(n, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch, "randperm", counting_randperm)
    sampler = InfiniteSampler(100, 0, 2, seed=5)
    _draw(sampler, 50, 3)  # 150 indices: epochs 0, 1 and 2 of 50 each
    assert drawn == [100, 100, 100]
