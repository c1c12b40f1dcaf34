"""A deterministic, resumable, per-rank infinite sampler.

Each epoch is a permutation of the whole dataset drawn from (seed, epoch) alone; rank r takes every
world_size-th element of it. The position is just (epoch, offset), so it is saved in every
checkpoint and a resumed run draws exactly the batches the uninterrupted run would have drawn.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class InfiniteSampler:
    def __init__(self, size: int, rank: int, world_size: int, seed: int, shuffle: bool = True,
                 device: torch.device | None = None) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        if size < world_size:
            raise ValueError(f"dataset of {size} items is smaller than the world size {world_size}")
        self.size = size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        # Truncate so every rank sees the same number of items per epoch and ranks stay in lockstep.
        self.per_rank = size // world_size
        self.epoch = 0
        self.offset = 0
        self._cached_epoch = -1
        # Where the indices are used. An epoch's indices cross to a GPU once, at the epoch's start;
        # a per-step copy of a pageable CPU tensor would block the host on the stream every step.
        self.device = device or torch.device("cpu")
        self._indices = torch.empty(0, dtype=torch.long)

    def _epoch_indices(self, epoch: int) -> torch.Tensor:
        if epoch != self._cached_epoch:
            if self.shuffle:
                state = np.random.SeedSequence([self.seed, epoch]).generate_state(2, dtype=np.uint64)
                generator = torch.Generator().manual_seed(int(state[0]) & ((1 << 63) - 1))
                order = torch.randperm(self.size, generator=generator)
            else:
                order = torch.arange(self.size)
            mine = order[self.rank :: self.world_size][: self.per_rank].clone()
            if self.device.type == "cuda":
                mine = mine.pin_memory().to(self.device, non_blocking=True)
            self._indices = mine
            self._cached_epoch = epoch
        return self._indices

    def next_indices(self, count: int) -> torch.Tensor:
        """The next `count` indices of this rank (on the sampler's device), continuing into the next
        epoch when needed."""
        parts = []
        remaining = count
        while remaining:
            indices = self._epoch_indices(self.epoch)
            take = min(remaining, self.per_rank - self.offset)
            parts.append(indices[self.offset : self.offset + take])
            self.offset += take
            remaining -= take
            if self.offset == self.per_rank:
                self.epoch += 1
                self.offset = 0
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "offset": self.offset,
            "rank": self.rank,
            "world_size": self.world_size,
            "size": self.size,
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state["size"], state["seed"]) != (self.size, self.seed):
            raise ValueError(
                f"sampler state is for {state['size']} items/seed {state['seed']}, "
                f"not {self.size}/{self.seed}"
            )
        if state["world_size"] != self.world_size:
            # Positions of a different world size do not map onto this one's partition; restart the
            # epoch stream at the same global position (not bitwise-exact, but no data is skipped).
            global_position = state["epoch"] * state["world_size"] * (state["size"] // state["world_size"])
            global_position += state["offset"] * state["world_size"]
            per_epoch = self.per_rank * self.world_size
            self.epoch, rest = divmod(global_position, per_epoch)
            self.offset = rest // self.world_size
            return
        self.epoch = int(state["epoch"])
        self.offset = int(state["offset"])
