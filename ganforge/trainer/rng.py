"""Every random stream a rank draws from: seeded per rank, captured into checkpoints, restored.

Only the CUDA generator of the rank's own device is saved. Saving every visible device's state (as
torch.cuda.get_rng_state_all does) ties a checkpoint to the number of GPUs the pod saw, and a
resume on a node exposing fewer GPUs would fail to restore it; the other devices' generators are
never drawn from anyway.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_rank(seed: int, rank: int) -> None:
    """Distinct, reproducible streams per rank (latents and penalties must differ across ranks)."""
    state = np.random.SeedSequence([seed, rank]).generate_state(2, dtype=np.uint32)
    random.seed(int(state[0]))
    np.random.seed(int(state[1]))
    torch.manual_seed((int(state[0]) << 32) | int(state[1]))


def capture_rng(device: torch.device) -> dict[str, Any]:
    """The process's RNG states as plain lists/tensors (loadable with weights_only); "cuda" holds
    the one state of `device` when it is a GPU, and nothing otherwise."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": [torch.cuda.get_rng_state(device)] if device.type == "cuda" else [],
    }


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state["cuda"]:
        saved = state["cuda"]
        # Checkpoints from before per-device states hold one state per visible GPU, indexed by device.
        index = 0 if len(saved) == 1 else device.index or 0
        if index < len(saved):
            torch.cuda.set_rng_state(saved[index], device)
