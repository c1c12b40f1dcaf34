"""The statistics of the canary's quality gate: is the new generator as good as the stable one?

Both revisions generate from the same seeded latents (and labels), so their samples are paired;
both are embedded by one feature extractor and held against the real data's reference features
that travel with the artifact.

The primary gate is KID (unbiased MMD^2 with the cubic polynomial kernel, Bińkowski et al. 2018):
ΔKID = KID(canary, real) - KID(stable, real), taken relative to KID(stable) (KID's scale depends
on the feature space, a share of the stable's does not), with a bootstrap confidence interval. The interval
resamples the latent pairs (one draw for both revisions, so their shared latent noise cancels) and
the reference features independently. The kernel matrices are computed once; a bootstrap draw is a
vector of multiplicities, and a sample drawn twice is never paired with itself (a duplicate would
add k(x, x) terms and bias MMD^2 upwards).

    pass          when the interval's upper end <= margin (e.g. 0.1: at most 10 % worse)
    fail          when its lower end > margin
    inconclusive  otherwise: more samples, or a person, must decide

FD is reported at equal N for both revisions only (FD is biased in N, so values from different N
never meet), with optional ceilings; precision/recall likewise. Hard checks need no statistics:
non-finite pixels, pixels outside [-1, 1], and collapse (sample diversity far below the stable's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ganforge.api.analysis import Measurement, Verdict, reported
from ganforge.api.training_job import QualityGate
from ganforge.evaluation import ReferenceStatistics
from ganforge.evaluation.domain_classifier import CLASSIFIER_FILE, TrainedClassifier
from ganforge.evaluation.features import DomainFeatures, EffNetLite0Features, FeatureExtractor
from ganforge.evaluation.metrics import FeatureStatistics, frechet_distance, precision_recall

# Generator outputs are tanh-bounded; fp16 rounding may land a hair outside [-1, 1].
PIXEL_RANGE_TOLERANCE = 1e-3
# Below this per-pixel standard deviation across samples (images in [-1, 1]) the output is constant.
COLLAPSED_PIXEL_STD = 1e-3


@dataclass(frozen=True)
class Interval:
    estimate: float
    lower: float
    upper: float


def _cubic_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    kernel: np.ndarray = (x @ y.T / x.shape[1] + 1.0) ** 3
    return kernel


def _within(kernel: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mean of k over pairs of distinct samples, for each row of sample multiplicities [B, n]."""
    diagonal = np.diag(kernel)
    total = np.einsum("bi,ij,bj->b", weights, kernel, weights, optimize=True)
    squares = (weights**2)
    count = weights.sum(axis=1) ** 2 - squares.sum(axis=1)
    result: np.ndarray = (total - squares @ diagonal) / count
    return result


def _across(kernel: np.ndarray, weights: np.ndarray, reference_weights: np.ndarray) -> np.ndarray:
    """Mean of k between generated and reference samples, per bootstrap draw."""
    total = np.einsum("bi,ij,bj->b", weights, kernel, reference_weights, optimize=True)
    result: np.ndarray = total / (weights.sum(axis=1) * reference_weights.sum(axis=1))
    return result


def kid(features: np.ndarray, reference: np.ndarray) -> float:
    """Unbiased KID of one sample against the reference (all samples, no subsets)."""
    ones, ref_ones = np.ones((1, len(features))), np.ones((1, len(reference)))
    x, r = np.asarray(features, np.float64), np.asarray(reference, np.float64)
    value = (_within(_cubic_kernel(x, x), ones) + _within(_cubic_kernel(r, r), ref_ones)
             - 2.0 * _across(_cubic_kernel(x, r), ones, ref_ones))
    return float(value[0])


@dataclass(frozen=True)
class KidComparison:
    difference: Interval  # KID(canary) - KID(stable)
    increase: Interval  # the same, relative to KID(stable): the gated statistic
    kid_stable: float


def kid_difference(canary: np.ndarray, stable: np.ndarray, reference: np.ndarray, confidence: float = 0.95,
                   resamples: int = 500, seed: int = 0) -> KidComparison:
    """ΔKID = KID(canary) - KID(stable) against `reference`, absolute and relative to KID(stable),
    with percentile bootstrap intervals.

    The relative increase is what is gated: KID's scale depends on the feature space (the domain
    classifier's and EfficientNet's differ by orders of magnitude), a share of the stable's does
    not. `canary[i]` and `stable[i]` come from the same latent. A draw whose KID(stable) is not
    positive has no relative increase; it counts as +inf, so it can only widen the interval."""
    c, s, r = (np.asarray(a, np.float64) for a in (canary, stable, reference))
    if c.shape != s.shape:
        raise ValueError(f"canary and stable samples must be paired: {c.shape} vs {s.shape}")
    if len(c) < 2 or len(r) < 2 or c.shape[1] != r.shape[1]:
        raise ValueError(f"need [N >= 2, D] samples of equal D, got {c.shape} and reference {r.shape}")
    k_cc, k_ss, k_rr = _cubic_kernel(c, c), _cubic_kernel(s, s), _cubic_kernel(r, r)
    k_cr, k_sr = _cubic_kernel(c, r), _cubic_kernel(s, r)

    def kids(weights: np.ndarray, reference_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        real = _within(k_rr, reference_weights)
        canary_kid = _within(k_cc, weights) + real - 2.0 * _across(k_cr, weights, reference_weights)
        stable_kid = _within(k_ss, weights) + real - 2.0 * _across(k_sr, weights, reference_weights)
        return canary_kid, stable_kid

    def relative(difference: np.ndarray, stable_kid: np.ndarray) -> np.ndarray:
        positive = stable_kid > 0
        result: np.ndarray = np.where(positive, difference / np.where(positive, stable_kid, 1.0), np.inf)
        return result

    canary_kid, stable_kid = kids(np.ones((1, len(c))), np.ones((1, len(r))))
    difference = canary_kid - stable_kid
    rng = np.random.default_rng(seed)
    differences, increases = [], []
    for start in range(0, resamples, 50):  # in blocks: bounded memory for large N
        count = min(50, resamples - start)
        weights = rng.multinomial(len(c), np.full(len(c), 1.0 / len(c)), size=count).astype(np.float64)
        reference_weights = rng.multinomial(len(r), np.full(len(r), 1.0 / len(r)), size=count).astype(np.float64)
        canary_draw, stable_draw = kids(weights, reference_weights)
        differences.append(canary_draw - stable_draw)
        increases.append(relative(canary_draw - stable_draw, stable_draw))
    alpha = (1.0 - confidence) / 2.0

    def interval(estimate: float, draws: list[np.ndarray]) -> Interval:
        values = np.concatenate(draws)
        # No interpolation between draws: an infinite draw must not turn the bound into NaN.
        return Interval(estimate, float(np.quantile(values, alpha, method="lower")),
                        float(np.quantile(values, 1.0 - alpha, method="higher")))

    return KidComparison(interval(float(difference[0]), differences),
                         interval(float(relative(difference, stable_kid)[0]), increases), float(stable_kid[0]))


def interval_verdict(interval: Interval, margin: float) -> Verdict:
    if interval.upper <= margin:
        return "Pass"
    if interval.lower > margin:
        return "Fail"
    return "Inconclusive"


def _ceiling(name: str, value: float, bound: float | None, message: str) -> Measurement:
    if bound is None:
        return reported(name, value, message)
    verdict: Verdict = "Pass" if value <= bound else "Fail"
    return Measurement(name=name, value=value, bound=bound, verdict=verdict, message=f"{message}, at most {bound:g}")


def _floor(name: str, value: float, bound: float | None, message: str) -> Measurement:
    if bound is None:
        return reported(name, value, message)
    verdict: Verdict = "Pass" if value >= bound else "Fail"
    return Measurement(name=name, value=value, bound=bound, verdict=verdict, message=f"{message}, at least {bound:g}")


def pixel_diversity(images: np.ndarray) -> float:
    """Mean over pixels of the standard deviation across samples: 0 for a constant generator."""
    flat = np.asarray(images, np.float64).reshape(len(images), -1)
    return float(flat.std(axis=0).mean())


def hard_checks(canary_images: np.ndarray, stable_images: np.ndarray, gate: QualityGate) -> list[Measurement]:
    """Checks that need no statistics: finite pixels in [-1, 1], and no collapse."""
    images = np.asarray(canary_images)
    finite = np.isfinite(images)
    non_finite = int(images.size - finite.sum())
    out = [Measurement(name="nonFinitePixels", value=float(non_finite), bound=0.0,
                       verdict="Pass" if non_finite == 0 else "Fail",
                       message="NaN or Inf pixels in the canary's samples")]
    outside = int((np.abs(np.where(finite, images, 0.0)) > 1.0 + PIXEL_RANGE_TOLERANCE).sum())
    out.append(Measurement(name="outOfRangePixels", value=float(outside), bound=0.0,
                           verdict="Pass" if outside == 0 else "Fail", message="pixels outside [-1, 1]"))
    if non_finite:
        out.append(Measurement(name="diversityRatio", verdict="Fail", message="not measured: non-finite pixels"))
        return out
    canary_diversity, stable_diversity = pixel_diversity(images), pixel_diversity(stable_images)
    ratio = canary_diversity / stable_diversity if stable_diversity > 0 else float("inf")
    collapsed = canary_diversity < COLLAPSED_PIXEL_STD or ratio < gate.min_diversity_ratio
    out.append(Measurement(
        name="diversityRatio", value=ratio, bound=gate.min_diversity_ratio, verdict="Fail" if collapsed else "Pass",
        message=f"sample diversity (pixel std across samples) {canary_diversity:.4f} vs stable {stable_diversity:.4f}"))
    return out


def quality_measurements(canary_features: np.ndarray, stable_features: np.ndarray, reference: FeatureStatistics,
                         gate: QualityGate, seed: int = 0) -> list[Measurement]:
    """ΔKID with its interval (the gate), then KID, FD and precision/recall of both revisions at
    the same N, each against its optional ceiling or floor."""
    reference_sample = reference.sample
    comparison = kid_difference(canary_features, stable_features, reference_sample, gate.confidence,
                                gate.bootstrap_resamples, seed)
    increase, difference = comparison.increase, comparison.difference
    out = [Measurement(
        name="kidIncrease", value=increase.estimate, bound=gate.kid_margin, lower=increase.lower, upper=increase.upper,
        verdict=interval_verdict(increase, gate.kid_margin),
        message=(f"(KID(canary) - KID(stable)) / KID(stable), {gate.confidence:.0%} interval "
                 f"[{increase.lower:.3g}, {increase.upper:.3g}], margin {gate.kid_margin:g}; "
                 f"ΔKID {difference.estimate:.4g} [{difference.lower:.4g}, {difference.upper:.4g}]"))]
    kid_canary, kid_stable = kid(canary_features, reference_sample), kid(stable_features, reference_sample)
    out.append(_ceiling("kidCanary", kid_canary, gate.max_kid, "KID of the canary"))
    out.append(reported("kidStable", kid_stable, "KID of the stable"))
    canary_stats = FeatureStatistics.from_features(canary_features)
    stable_stats = FeatureStatistics.from_features(stable_features)
    fd_canary = frechet_distance(canary_stats.mean, canary_stats.cov, reference.mean, reference.cov)
    fd_stable = frechet_distance(stable_stats.mean, stable_stats.cov, reference.mean, reference.cov)
    n = len(canary_features)
    out.append(_ceiling("fdCanary", fd_canary, gate.max_fd, f"FD of the canary at N={n}"))
    out.append(reported("fdStable", fd_stable, f"FD of the stable at N={n}"))
    regression = (fd_canary - fd_stable) / fd_stable if fd_stable > 0 else 0.0
    out.append(_ceiling("fdRegression", regression, gate.max_fd_regression, "relative FD increase over the stable"))
    count = min(n, len(reference_sample))
    precision, recall = precision_recall(reference_sample[:count], np.asarray(canary_features)[:count])
    out.append(_floor("precisionCanary", precision, gate.min_precision, "precision of the canary (k=3)"))
    out.append(_floor("recallCanary", recall, gate.min_recall, "recall of the canary (k=3)"))
    return out


# -- the feature space ---------------------------------------------------------------------------


class GateSetupError(Exception):
    """The artifact lacks what the gate needs (reference statistics, the extractor's weights)."""


def gate_extractor(reference: ReferenceStatistics, read: Callable[[str], bytes], wanted: str | None,
                   device: torch.device) -> FeatureExtractor:
    """The one feature extractor of the gate, from what the artifact carries: `wanted`, or the
    domain classifier when the artifact has it (in-domain, and cheap on a CPU), else EfficientNet."""
    available = sorted(reference.features)
    if wanted is None:
        wanted = "domain" if "domain" in available else "effnetlite0" if "effnetlite0" in available else None
        if wanted is None:
            raise GateSetupError(f"the artifact's reference statistics cover {available}: none the gate can use")
    if wanted not in available:
        raise GateSetupError(f"featureExtractor {wanted}: the artifact has reference statistics for {available} only")
    if wanted == "domain":
        try:
            classifier = TrainedClassifier.from_bytes(read(CLASSIFIER_FILE))
        except (OSError, KeyError, RuntimeError) as error:
            raise GateSetupError(
                f"featureExtractor domain: the artifact's {CLASSIFIER_FILE} is unusable: {error}") from None
        return DomainFeatures(classifier.model, device)
    if wanted == "effnetlite0":
        return EffNetLite0Features(device)
    raise GateSetupError(f"featureExtractor {wanted}: not supported by the canary gate (use domain or effnetlite0)")
