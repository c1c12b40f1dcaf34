"""Where a training step's time goes: batch assembly (data) and the gradient all-reduce
(communication), the rest being compute.

On CUDA the phases are timed with CUDA events recorded on the stream, read once per report: timing
them with the host clock would need a synchronisation per phase, the very stall worth finding.
On the CPU the host clock is exact.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

PHASES = ("data", "communication")


class PhaseTimer:
    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._seconds = dict.fromkeys(PHASES, 0.0)
        self._events: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self._events.append((name, start, end))
        else:
            began = time.perf_counter()
            yield
            self._seconds[name] += time.perf_counter() - began

    def take(self, steps: int, step_seconds: float) -> dict[str, float]:
        """Mean seconds per step in each phase since the last call; compute is what the phases leave."""
        if self._events:
            self._events[-1][2].synchronize()
            for name, start, end in self._events:
                self._seconds[name] += start.elapsed_time(end) / 1000
            self._events.clear()
        per_step = {name: seconds / max(steps, 1) for name, seconds in self._seconds.items()}
        per_step["compute"] = max(step_seconds - sum(per_step.values()), 0.0)
        self._seconds = dict.fromkeys(PHASES, 0.0)
        return per_step
