"""Memorisation: how many generated samples sit closer to a training image than real images do.

Every generated sample's nearest neighbour is searched in the features of the whole training set
(or a seeded subset of it, by choice), in chunks so that memory stays bounded at any dataset size.
The yardstick comes from real images: the distances from held-out real images to their nearest
training image (idx data ships a test split), or, for data without one, from training images to
their nearest *other* training image (leave-one-out). The score is the fraction of generated
samples closer to the training set than all but REAL_QUANTILE of those real images are: about
REAL_QUANTILE (0.05) for a generator whose samples are as novel as unseen real images, towards 1
for one that copies its training data.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch

from ganforge.evaluation.features import StopCheck, check_stop, never

QUERY_CHUNK = 1024
REFERENCE_CHUNK = 8192  # a [1024, 8192] float32 block of distances: 32 MiB at any dataset size
PROBES = 2000
REAL_QUANTILE = 0.05


def nearest_distances(queries: np.ndarray, reference: np.ndarray, exclude: np.ndarray | None = None,
                      should_stop: StopCheck = never) -> np.ndarray:
    """Euclidean distance from each query to its nearest reference row, the reference scanned in
    chunks; `exclude[i]` names a reference row query i may not match (itself, for leave-one-out)."""
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    ref = torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float32))
    best = torch.full((q.shape[0],), float("inf"))
    for start in range(0, q.shape[0], QUERY_CHUNK):
        check_stop(should_stop)
        block = q[start : start + QUERY_CHUNK]
        rows = torch.arange(block.shape[0])
        for offset in range(0, ref.shape[0], REFERENCE_CHUNK):
            distances = torch.cdist(block, ref[offset : offset + REFERENCE_CHUNK])
            if exclude is not None:
                columns = torch.from_numpy(np.asarray(exclude[start : start + QUERY_CHUNK], dtype=np.int64)) - offset
                inside = (columns >= 0) & (columns < distances.shape[1])
                distances[rows[inside], columns[inside]] = float("inf")
            current = best[start : start + block.shape[0]]
            torch.minimum(current, distances.min(dim=1).values, out=current)
    result: np.ndarray = best.numpy()
    return result


@dataclass
class MemorizationReference:
    """One feature space's training-set features and the real images' nearest-neighbour distances."""

    train_features: np.ndarray  # float32 [N, D]
    real_distances: np.ndarray  # float32 [M]
    probe: str  # "held-out" or "leave-one-out": where the real distances come from

    @classmethod
    def build(cls, train_features: np.ndarray, held_out_features: np.ndarray | None = None,
              seed: int = 0) -> MemorizationReference:
        train = np.ascontiguousarray(train_features, dtype=np.float32)
        if len(train) < 2:
            raise ValueError(f"memorisation needs at least two training images, got {len(train)}")
        if held_out_features is not None and len(held_out_features) >= 2:
            distances = nearest_distances(held_out_features[:PROBES], train)
            return cls(train, distances, "held-out")
        picked = np.random.default_rng(seed).choice(len(train), size=min(PROBES, len(train)), replace=False)
        return cls(train, nearest_distances(train[picked], train, exclude=picked), "leave-one-out")

    @property
    def threshold(self) -> float:
        return float(np.quantile(self.real_distances, REAL_QUANTILE))

    def score(self, generated_features: np.ndarray, should_stop: StopCheck = never) -> dict[str, float]:
        """memorization: the fraction of samples closer than the threshold; nn_dist_gen_train and
        memorization_nn_ratio: their median distance, and its ratio to the real images' median."""
        distances = nearest_distances(generated_features, self.train_features, should_stop=should_stop)
        median = float(np.median(distances))
        return {"memorization": float((distances < self.threshold).mean()), "nn_dist_gen_train": median,
                "memorization_nn_ratio": median / max(float(np.median(self.real_distances)), 1e-12)}

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, train_features=self.train_features, real_distances=self.real_distances,
                 probe=np.array(self.probe))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> MemorizationReference:
        with np.load(io.BytesIO(data)) as archive:
            return cls(archive["train_features"], archive["real_distances"], str(archive["probe"]))
