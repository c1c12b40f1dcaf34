"""The memorisation signal's arithmetic: chunked nearest neighbours and the real-image yardstick."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ganforge.evaluation import memorization
from ganforge.evaluation.memorization import MemorizationReference, nearest_distances


def _brute_force(queries: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return np.sqrt(((queries[:, None, :] - reference[None, :, :]) ** 2).sum(-1)).min(axis=1)


def test_chunked_search_equals_brute_force_across_chunk_edges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memorization, "QUERY_CHUNK", 7)
    monkeypatch.setattr(memorization, "REFERENCE_CHUNK", 5)
    rng = np.random.default_rng(0)
    queries, reference = rng.normal(size=(23, 4)), rng.normal(size=(31, 4))
    assert np.allclose(nearest_distances(queries, reference), _brute_force(queries, reference), atol=1e-5)


def test_leave_one_out_never_matches_a_probe_with_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memorization, "REFERENCE_CHUNK", 4)
    reference = np.array([[0.0], [1.0], [3.0], [7.0], [15.0], [31.0]])
    picked = np.array([0, 3, 5])
    assert np.allclose(nearest_distances(reference[picked], reference, exclude=picked), [1.0, 4.0, 16.0])


def test_copies_score_near_one_and_unseen_samples_near_the_quantile() -> None:
    rng = np.random.default_rng(1)
    train = rng.normal(size=(3000, 8)).astype(np.float32)
    unseen = rng.normal(size=(3000, 8)).astype(np.float32)
    for reference in (MemorizationReference.build(train), MemorizationReference.build(train, unseen[:1500])):
        copies = reference.score(train[:1000] + 1e-3)
        fresh = reference.score(unseen[1500:2500])
        assert copies["memorization"] > 0.99 and copies["memorization_nn_ratio"] < 0.01
        assert fresh["memorization"] == pytest.approx(memorization.REAL_QUANTILE, abs=0.03)
        assert fresh["memorization_nn_ratio"] == pytest.approx(1.0, abs=0.1)
    assert MemorizationReference.build(train).probe == "leave-one-out"
    assert MemorizationReference.build(train, unseen).probe == "held-out"


def test_a_reference_round_trips_through_bytes() -> None:
    built = MemorizationReference.build(torch.randn(50, 3).numpy())
    again = MemorizationReference.from_bytes(built.to_bytes())
    assert np.array_equal(again.train_features, built.train_features) and again.probe == built.probe
    assert again.threshold == built.threshold
