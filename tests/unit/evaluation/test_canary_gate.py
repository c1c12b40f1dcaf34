"""The canary quality gate's statistics on synthetic features (pure numpy; the real generator and
feature extractor are exercised by the calibration test and the e2e rollout)."""

from __future__ import annotations

import numpy as np
import pytest

from ganforge.api.analysis import combined_verdict
from ganforge.api.training_job import QualityGate
from ganforge.evaluation.canary_gate import (
    Interval,
    _cubic_kernel,
    _within,
    hard_checks,
    interval_verdict,
    kid,
    kid_difference,
    quality_measurements,
)
from ganforge.evaluation.metrics import FeatureStatistics, kernel_inception_distance

DIM = 16


def gaussian(count: int, shift: float = 0.0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, DIM)) + shift


def test_kid_matches_the_subset_estimator_when_the_subset_is_everything() -> None:
    x, r = gaussian(300, 0.3, seed=1), gaussian(300, seed=2)
    mean, _ = kernel_inception_distance(x, r, subsets=1, subset_size=300)
    assert kid(x, r) == pytest.approx(mean, rel=1e-9)


def test_a_sample_drawn_twice_is_never_paired_with_itself() -> None:
    x = gaussian(5, seed=3)
    weights = np.array([[2.0, 0.0, 1.0, 1.0, 1.0]])
    # The multiset spelled out: sample 0 twice. Distinct-sample pairs only.
    rows = [0, 0, 2, 3, 4]
    kernel = _cubic_kernel(x, x)
    pairs = [kernel[a, b] for i, a in enumerate(rows) for j, b in enumerate(rows) if i != j and a != b]
    assert _within(kernel, weights)[0] == pytest.approx(np.mean(pairs), rel=1e-12)


def test_identical_revisions_differ_by_exactly_zero() -> None:
    samples = gaussian(200, seed=4)
    comparison = kid_difference(samples + 1.0, samples + 1.0, gaussian(300, seed=5), resamples=200)
    for interval in (comparison.difference, comparison.increase):
        assert (interval.estimate, interval.lower, interval.upper) == (0.0, 0.0, 0.0)
        assert interval_verdict(interval, 0.0) == "Pass"


def test_the_estimate_is_the_difference_of_the_two_kids() -> None:
    canary, stable, reference = gaussian(250, 0.5, seed=6), gaussian(250, 0.3, seed=7), gaussian(400, seed=8)
    comparison = kid_difference(canary, stable, reference, resamples=200)
    difference = kid(canary, reference) - kid(stable, reference)
    assert comparison.difference.estimate == pytest.approx(difference, rel=1e-9)
    assert comparison.kid_stable == pytest.approx(kid(stable, reference), rel=1e-9)
    assert comparison.increase.estimate == pytest.approx(difference / kid(stable, reference), rel=1e-9)
    for interval in (comparison.difference, comparison.increase):
        assert interval.lower < interval.estimate < interval.upper


def test_a_clearly_worse_canary_fails_and_a_clearly_better_one_passes() -> None:
    reference = gaussian(500, seed=9)
    stable = gaussian(400, 0.3, seed=10)
    worse = kid_difference(gaussian(400, 0.6, seed=11), stable, reference, resamples=300).increase
    assert worse.lower > 1.0  # several times the stable's KID
    assert interval_verdict(worse, 0.1) == "Fail"
    better = kid_difference(stable, gaussian(400, 0.6, seed=11), reference, resamples=300).increase
    assert interval_verdict(better, 0.0) == "Pass"


def test_a_stable_as_good_as_the_real_data_leaves_a_relative_gate_undecided() -> None:
    reference = gaussian(400, seed=15)
    # KID(stable) is ~0 (and may be negative: the estimator is unbiased), so no relative increase.
    comparison = kid_difference(gaussian(300, 0.05, seed=16), gaussian(300, seed=17), reference, resamples=200)
    assert comparison.increase.upper == np.inf
    assert interval_verdict(comparison.increase, 0.1) == "Inconclusive"


def test_an_interval_straddling_the_margin_is_inconclusive() -> None:
    assert interval_verdict(Interval(0.01, -0.01, 0.03), 0.02) == "Inconclusive"
    assert interval_verdict(Interval(0.01, -0.01, 0.02), 0.02) == "Pass"
    assert interval_verdict(Interval(0.05, 0.021, 0.07), 0.02) == "Fail"


def test_unpaired_samples_are_refused() -> None:
    with pytest.raises(ValueError, match="paired"):
        kid_difference(gaussian(10), gaussian(11), gaussian(20))


def images(count: int, seed: int = 0) -> np.ndarray:
    return np.tanh(np.random.default_rng(seed).standard_normal((count, 1, 8, 8))).astype(np.float32)


def verdicts(measurements: list) -> dict[str, str]:
    return {m.name: m.verdict for m in measurements}


def test_hard_checks_pass_healthy_samples() -> None:
    result = hard_checks(images(64, 1), images(64, 2), QualityGate())
    assert verdicts(result) == {"nonFinitePixels": "Pass", "outOfRangePixels": "Pass", "diversityRatio": "Pass"}


def test_hard_checks_catch_nan_range_and_collapse() -> None:
    gate = QualityGate()
    nan = images(64, 1)
    nan[3, 0, 2, 2] = np.nan
    assert verdicts(hard_checks(nan, images(64), gate))["nonFinitePixels"] == "Fail"
    assert combined_verdict(m.verdict for m in hard_checks(nan, images(64), gate)) == "Fail"
    assert verdicts(hard_checks(images(64, 1) * 1.5, images(64), gate))["outOfRangePixels"] == "Fail"
    constant = np.repeat(images(1, 1), 64, axis=0)
    assert verdicts(hard_checks(constant, images(64), gate))["diversityRatio"] == "Fail"
    # Half the diversity is collapse at the default ratio of 0.5; 0.6 of it is not.
    assert verdicts(hard_checks(images(64, 1) * 0.4, images(64), gate))["diversityRatio"] == "Fail"
    assert verdicts(hard_checks(images(64, 1) * 0.6, images(64), gate))["diversityRatio"] == "Pass"


def test_quality_measurements_bound_only_what_is_configured() -> None:
    reference = FeatureStatistics.from_features(gaussian(400, seed=12))
    canary, stable = gaussian(300, 1.0, seed=13), gaussian(300, 0.3, seed=14)
    unbounded = {m.name: m for m in quality_measurements(canary, stable, reference,
                                                         QualityGate(kid_margin=0.0, bootstrap_resamples=100))}
    assert unbounded["kidIncrease"].verdict == "Fail"
    assert unbounded["fdCanary"].bound is None and unbounded["fdCanary"].verdict == "Pass"
    assert unbounded["fdCanary"].value > unbounded["fdStable"].value
    bounded = {m.name: m for m in quality_measurements(
        stable, stable, reference,
        QualityGate(kid_margin=0.0, bootstrap_resamples=100, max_fd=0.0, min_recall=1.0))}
    assert bounded["kidIncrease"].verdict == "Pass"
    assert bounded["fdCanary"].verdict == "Fail"  # FD is never exactly 0 at finite N
    assert bounded["recallCanary"].bound == pytest.approx(1.0)


def test_nothing_measured_is_never_a_pass() -> None:
    assert combined_verdict([]) == "Inconclusive"
    assert combined_verdict(["Pass", "Inconclusive"]) == "Inconclusive"
    assert combined_verdict(["Pass", "Inconclusive", "Fail"]) == "Fail"
    assert combined_verdict(["Pass", "Pass"]) == "Pass"
