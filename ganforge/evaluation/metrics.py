"""Distribution metrics on feature vectors. Pure numpy/torch: no models, no files.

The metrics are named after the feature space they are computed in (fd_effnetlite0, fd_domain):
Fréchet distance in Inception features ("FID") is only FID when the features are Inception's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

# Feature vectors kept as a sample (KID, precision/recall need vectors, not moments).
MAX_SAMPLE = 5000


@dataclass
class FeatureStatistics:
    """Gaussian moments of a feature set plus a sample of the features themselves (KID,
    precision/recall and nearest-neighbour distances need samples, not moments)."""

    mean: np.ndarray  # float64 [D]
    cov: np.ndarray  # float64 [D, D]
    sample: np.ndarray  # float32 [M, D]
    count: int

    @classmethod
    def from_features(cls, features: np.ndarray | torch.Tensor, max_sample: int = MAX_SAMPLE) -> FeatureStatistics:
        feats = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
        if feats.ndim != 2 or feats.shape[0] < 2:
            raise ValueError(f"need at least two feature vectors [N, D], got {feats.shape}")
        as64 = feats.astype(np.float64)
        return cls(as64.mean(axis=0), np.cov(as64, rowvar=False), feats[:max_sample].astype(np.float32),
                   int(feats.shape[0]))

    def save(self, path: Path | BinaryIO) -> None:
        np.savez(path, mean=self.mean, cov=self.cov, sample=self.sample, count=np.int64(self.count))

    @classmethod
    def load(cls, path: Path | BinaryIO) -> FeatureStatistics:
        with np.load(path) as data:
            return cls(data["mean"], data["cov"], data["sample"], int(data["count"]))


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2.0)
    root: np.ndarray = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    return root


def frechet_distance(mean1: np.ndarray, cov1: np.ndarray, mean2: np.ndarray, cov2: np.ndarray) -> float:
    """||m1 - m2||^2 + Tr(C1 + C2 - 2 (C1 C2)^1/2) between two Gaussians.

    Tr((C1 C2)^1/2) = sum of sqrt of the eigenvalues of C1^1/2 C2 C1^1/2, which is symmetric PSD, so
    a symmetric eigensolver gives a real, stable answer where a general sqrtm can return complex
    noise on near-singular covariances (few samples, many dimensions).
    """
    if mean1.shape != mean2.shape or cov1.shape != cov2.shape:
        raise ValueError(f"feature dimensions differ: {mean1.shape} vs {mean2.shape}")
    root1 = _sqrt_psd(cov1)
    middle = root1 @ cov2 @ root1
    trace_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2.0), 0.0, None)).sum())
    diff = mean1 - mean2
    value = float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_sqrt)
    return max(value, 0.0)


def kernel_inception_distance(
    features1: np.ndarray, features2: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3 (Bińkowski et al.,
    2018), averaged over random subsets; returns (mean, std). Despite the historical name, the
    feature space is whatever the caller used."""
    f1 = np.asarray(features1, dtype=np.float64)
    f2 = np.asarray(features2, dtype=np.float64)
    dim = f1.shape[1]
    m = min(subset_size, f1.shape[0], f2.shape[0])
    if m < 2:
        raise ValueError("KID needs at least two samples per set")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x = f1[rng.choice(f1.shape[0], m, replace=False)]
        y = f2[rng.choice(f2.shape[0], m, replace=False)]
        kxx = (x @ x.T / dim + 1.0) ** 3
        kyy = (y @ y.T / dim + 1.0) ** 3
        kxy = (x @ y.T / dim + 1.0) ** 3
        mmd = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2.0 * kxy.mean()
        values.append(mmd)
    return float(np.mean(values)), float(np.std(values))


def _pairwise_min_le(
    queries: torch.Tensor, points: torch.Tensor, radii: torch.Tensor, chunk: int = 2048
) -> torch.Tensor:
    """For each query, whether it lies inside any ball (points[j], radii[j])."""
    inside = []
    for block in queries.split(chunk):
        inside.append((torch.cdist(block, points) <= radii[None, :]).any(dim=1))
    return torch.cat(inside)


def _kth_neighbour_radii(points: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    radii = []
    for block in points.split(chunk):
        # k + 1 because each point's nearest neighbour in its own set is itself at distance 0.
        radii.append(torch.cdist(block, points).kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al., 2019): precision = share of generated
    samples inside the real manifold (union of k-NN balls), recall = share of real samples inside
    the generated manifold. Low recall with good precision is the signature of mode collapse."""
    r = torch.from_numpy(np.asarray(real, dtype=np.float32))
    f = torch.from_numpy(np.asarray(fake, dtype=np.float32))
    if r.shape[0] <= k or f.shape[0] <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples per set")
    precision = _pairwise_min_le(f, r, _kth_neighbour_radii(r, k)).float().mean().item()
    recall = _pairwise_min_le(r, f, _kth_neighbour_radii(f, k)).float().mean().item()
    return float(precision), float(recall)


def class_coverage(predicted: np.ndarray, num_classes: int, min_share: float = 0.2) -> tuple[float, float]:
    """(coverage, normalised entropy) of predicted classes. A class counts as covered when it gets
    at least `min_share` of its uniform share; entropy is 1 for a uniform histogram, 0 for a
    single class."""
    counts = np.bincount(np.asarray(predicted, dtype=np.int64), minlength=num_classes)[:num_classes].astype(np.float64)
    share = counts / max(counts.sum(), 1.0)
    coverage = float((share >= min_share / num_classes).mean())
    nonzero = share[share > 0]
    entropy = float(-(nonzero * np.log(nonzero)).sum() / np.log(num_classes)) + 0.0  # no "-0"
    return coverage, entropy
