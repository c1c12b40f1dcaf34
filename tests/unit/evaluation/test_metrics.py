from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from ganforge.evaluation import MemorizationReference, ReferenceStatistics, evaluate_images
from ganforge.evaluation.metrics import (
    FeatureStatistics,
    class_coverage,
    frechet_distance,
    kernel_inception_distance,
    precision_recall,
)


def _random_cov(rng: np.random.Generator, dim: int) -> np.ndarray:
    a = rng.normal(size=(dim, dim))
    return a @ a.T / dim + 0.1 * np.eye(dim)


def test_fd_of_identical_gaussians_is_zero() -> None:
    rng = np.random.default_rng(0)
    mean, cov = rng.normal(size=8), _random_cov(rng, 8)
    assert frechet_distance(mean, cov, mean, cov) == pytest.approx(0.0, abs=1e-8)


def test_fd_closed_forms() -> None:
    rng = np.random.default_rng(1)
    cov = _random_cov(rng, 6)
    shift = rng.normal(size=6)
    # Same covariance: only the squared mean difference remains.
    assert frechet_distance(np.zeros(6), cov, shift, cov) == pytest.approx(float(shift @ shift), rel=1e-9)
    # Diagonal covariances: sum of (sigma1 - sigma2)^2.
    s1, s2 = rng.uniform(0.5, 2.0, 6), rng.uniform(0.5, 2.0, 6)
    expected = float(((s1 - s2) ** 2).sum())
    assert frechet_distance(np.zeros(6), np.diag(s1**2), np.zeros(6), np.diag(s2**2)) == pytest.approx(expected)


def test_fd_matches_the_general_matrix_square_root() -> None:
    rng = np.random.default_rng(2)
    m1, m2 = rng.normal(size=5), rng.normal(size=5)
    c1, c2 = _random_cov(rng, 5), _random_cov(rng, 5)
    root = scipy.linalg.sqrtm(c1 @ c2).real
    expected = float((m1 - m2) @ (m1 - m2) + np.trace(c1 + c2 - 2 * root))
    assert frechet_distance(m1, c1, m2, c2) == pytest.approx(expected, rel=1e-8)


def test_fd_from_samples_approaches_the_population_value() -> None:
    rng = np.random.default_rng(3)
    a = FeatureStatistics.from_features(rng.normal(size=(20000, 4)))
    b = FeatureStatistics.from_features(rng.normal(size=(20000, 4)) + np.array([1.0, 0, 0, 0]))
    assert frechet_distance(a.mean, a.cov, b.mean, b.cov) == pytest.approx(1.0, abs=0.05)


def test_kid_unbiased_near_zero_for_same_distribution_and_positive_for_shift() -> None:
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(600, 16)), rng.normal(size=(600, 16))
    same, _ = kernel_inception_distance(x, y, subsets=20, subset_size=300)
    shifted, _ = kernel_inception_distance(x, y + 0.5, subsets=20, subset_size=300)
    assert abs(same) < 0.01
    assert shifted > 0.1


def test_kid_matches_direct_formula_on_a_tiny_case() -> None:
    x = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = np.array([[2.0, 0.0], [0.0, 0.0], [1.0, 2.0]])

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return float((a @ b / 2 + 1) ** 3)

    m = 3
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    value, std = kernel_inception_distance(x, y, subsets=3, subset_size=3)
    assert value == pytest.approx(kxx + kyy - 2 * kxy)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_precision_recall_extremes_and_collapse() -> None:
    rng = np.random.default_rng(5)
    real = rng.normal(size=(400, 8)).astype(np.float32)
    assert precision_recall(real, real.copy(), k=3) == (1.0, 1.0)
    far = real + 100.0
    assert precision_recall(real, far, k=3) == (0.0, 0.0)
    collapsed = np.repeat(real[:1], 400, axis=0) + rng.normal(scale=1e-3, size=(400, 8)).astype(np.float32)
    precision, recall = precision_recall(real, collapsed, k=3)
    assert precision == 1.0 and recall < 0.05


def test_class_coverage_and_entropy() -> None:
    assert class_coverage(np.arange(100) % 10, 10) == (1.0, pytest.approx(1.0))
    assert class_coverage(np.zeros(100, dtype=int), 10) == (0.1, 0.0)


class _Flatten:
    """A deterministic stand-in extractor: pixels as features (the metric code is what is tested)."""

    name = "pixels"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)[:, :16]


def test_evaluate_images_standalone_on_uint8_and_float() -> None:
    gen = torch.Generator().manual_seed(0)
    reals = torch.randint(0, 256, (300, 1, 4, 4), dtype=torch.uint8, generator=gen)
    feats = _Flatten()(reals.float() / 127.5 - 1)
    ref = ReferenceStatistics("hash", 0, {"pixels": FeatureStatistics.from_features(feats)})
    memorization = {"pixels": MemorizationReference.build(feats.numpy())}
    same = evaluate_images(reals, ref, [_Flatten()], metrics=["fd", "kid", "precision_recall", "memorization"],
                           memorization=memorization)
    noise = evaluate_images(torch.zeros(300, 1, 4, 4), ref, [_Flatten()], metrics=["fd"])
    assert same.metrics["fd_pixels"] == pytest.approx(0.0, abs=1e-6)
    assert same.metrics["precision_pixels"] == 1.0 and same.metrics["recall_pixels"] == 1.0
    assert same.metrics["nn_dist_gen_train_pixels"] == pytest.approx(0.0, abs=1e-3)
    assert same.metrics["memorization_pixels"] == 1.0  # every sample is a training image
    assert noise.metrics["fd_pixels"] > 1.0
    assert same.num_samples == 300


def test_fd_compares_equal_sample_counts() -> None:
    """FD is biased by the sample count: with more generated samples than the reference holds, only
    as many as the reference has enter it (here the first 300, identical to the reference)."""
    gen = torch.Generator().manual_seed(1)
    reals = torch.randint(0, 256, (300, 1, 4, 4), dtype=torch.uint8, generator=gen)
    ref = ReferenceStatistics("hash", 0, {"pixels": FeatureStatistics.from_features(_Flatten()(
        reals.float() / 127.5 - 1))})
    assert ref.features["pixels"].count == 300
    others = torch.zeros(700, 1, 4, 4, dtype=torch.uint8)  # far from the reference: FD would be large
    result = evaluate_images(torch.cat([reals, others]), ref, [_Flatten()], metrics=["fd"])
    assert result.num_samples == 1000 and result.metrics["fd_pixels"] == pytest.approx(0.0, abs=1e-6)
    assert evaluate_images(torch.cat([others, reals]), ref, [_Flatten()], metrics=["fd"]).metrics["fd_pixels"] > 1.0
