"""Evaluation that can be imported on its own (the serving canary gate reuses it on images
generated through Triton): `evaluate_images(images, reference, extractors)` is a pure function of
the images, the cached reference statistics and the (deterministic) feature extractors."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

import numpy as np
import torch

from ganforge.api.training_job import MetricName
from ganforge.evaluation.features import (
    DomainFeatures,
    EvaluationInterrupted,
    FeatureExtractor,
    StopCheck,
    as_unit_float,
    check_stop,
    extract,
    never,
)
from ganforge.evaluation.memorization import MemorizationReference
from ganforge.evaluation.metrics import (
    MAX_SAMPLE,
    FeatureStatistics,
    class_coverage,
    frechet_distance,
    kernel_inception_distance,
    precision_recall,
)

__all__ = ["ALL_METRICS", "EvaluationInterrupted", "EvaluationResult", "MemorizationReference", "ReferenceStatistics",
           "evaluate_images"]

ALL_METRICS: tuple[str, ...] = get_args(MetricName)  # the API's list, in its order
REFERENCE_META = "reference.json"


@dataclass
class ReferenceStatistics:
    """Real-data statistics per feature space, keyed by extractor name."""

    dataset_hash: str
    num_classes: int
    features: dict[str, FeatureStatistics]
    # Median distance from held-out real images to their nearest training image (same sample).
    # Written by earlier versions; read for compatibility, no longer used (see memorization.py).
    heldout_nn_median: dict[str, float] = field(default_factory=dict)
    # Per-class moments (means [C, D], covariances [C, D, D]) in the domain classifier's space:
    # what per-class FD compares a conditional generator's classes with.
    class_moments: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def to_files(self) -> dict[str, bytes]:
        """One .npz per feature space plus reference.json: what a directory (or an artifact) holds."""
        files: dict[str, bytes] = {}
        for name, stats in self.features.items():
            buffer = io.BytesIO()
            stats.save(buffer)
            files[f"{name}.npz"] = buffer.getvalue()
        for name, (means, covs) in self.class_moments.items():
            buffer = io.BytesIO()
            np.savez(buffer, means=means, covs=covs)
            files[f"{name}-classes.npz"] = buffer.getvalue()
        meta = {"datasetHash": self.dataset_hash, "numClasses": self.num_classes,
                "extractors": sorted(self.features), "heldoutNnMedian": self.heldout_nn_median,
                "classMoments": sorted(self.class_moments)}
        files[REFERENCE_META] = (json.dumps(meta, indent=2) + "\n").encode()
        return files

    @classmethod
    def from_files(cls, read: Callable[[str], bytes]) -> ReferenceStatistics:
        meta = json.loads(read(REFERENCE_META))
        features = {name: FeatureStatistics.load(io.BytesIO(read(f"{name}.npz"))) for name in meta["extractors"]}
        class_moments = {}
        for name in meta.get("classMoments", []):
            with np.load(io.BytesIO(read(f"{name}-classes.npz"))) as archive:
                class_moments[name] = (archive["means"], archive["covs"])
        return cls(meta["datasetHash"], int(meta["numClasses"]), features, dict(meta["heldoutNnMedian"]),
                   class_moments)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in self.to_files().items():
            (directory / name).write_bytes(data)

    @classmethod
    def load(cls, directory: Path) -> ReferenceStatistics:
        return cls.from_files(lambda name: (directory / name).read_bytes())


@dataclass(frozen=True)
class EvaluationResult:
    metrics: dict[str, float]
    num_samples: int
    seconds: float


def evaluate_images(
    images: torch.Tensor,
    reference: ReferenceStatistics,
    extractors: Sequence[FeatureExtractor],
    metrics: Sequence[str] = ALL_METRICS,
    classifier: DomainFeatures | None = None,
    batch_size: int = 256,
    should_stop: StopCheck = never,
    labels: torch.Tensor | None = None,
    memorization: Mapping[str, MemorizationReference] | None = None,
) -> EvaluationResult:
    """Metrics of generated images (uint8 [N,C,H,W] or float in [-1, 1]) against `reference`.

    Names say which feature space they use: fd_<extractor> (at equal N: as many generated samples
    as the reference has), kid_<extractor> (+ _std), precision_<extractor>, recall_<extractor>
    (k = 3); with `memorization` references, memorization_<extractor> (the fraction of samples
    closer to a training image than real images come, memorization.py) with nn_dist_gen_train_
    and memorization_nn_ratio_; class_coverage / class_entropy from the domain classifier; and,
    given the labels the images were generated for, label_accuracy (how often the classifier sees
    the requested class) and fd_<classifier>_class_mean / _class_max (per-class FD). `should_stop`
    is asked between batches and between metrics; when it says yes, EvaluationInterrupted is raised."""
    start = time.perf_counter()
    if images.ndim != 4:
        raise ValueError(f"expected images [N, C, H, W], got {tuple(images.shape)}")
    wanted = set(metrics)
    out: dict[str, float] = {}
    features_by_space: dict[str, np.ndarray] = {}
    for extractor in extractors:
        if extractor.name not in reference.features:
            raise KeyError(f"no reference statistics for feature extractor {extractor.name!r}")
        ref = reference.features[extractor.name]
        feats = extract(extractor, images, batch_size, should_stop).numpy()
        features_by_space[extractor.name] = feats
        check_stop(should_stop)
        if "fd" in wanted:
            # FD is biased by sample size: compare equal counts.
            gen = FeatureStatistics.from_features(feats[: max(2, min(len(feats), ref.count))])
            out[f"fd_{extractor.name}"] = frechet_distance(gen.mean, gen.cov, ref.mean, ref.cov)
        sample = feats[:MAX_SAMPLE].astype(np.float32)  # as FeatureStatistics keeps for the reference
        if "kid" in wanted:
            mean, std = kernel_inception_distance(sample, ref.sample, subsets=50, subset_size=1000)
            out[f"kid_{extractor.name}"], out[f"kid_{extractor.name}_std"] = mean, std
            check_stop(should_stop)
        if "precision_recall" in wanted:
            n = min(len(sample), len(ref.sample))
            out[f"precision_{extractor.name}"], out[f"recall_{extractor.name}"] = precision_recall(
                ref.sample[:n], sample[:n], k=3
            )
            check_stop(should_stop)
        if "memorization" in wanted and memorization is not None and extractor.name in memorization:
            for key, value in memorization[extractor.name].score(feats, should_stop).items():
                out[f"{key}_{extractor.name}"] = value
    if classifier is not None and reference.num_classes and ({"mode_collapse", "label_adherence"} & wanted):
        predicted = _predicted_classes(classifier, images, batch_size, should_stop)
        if "mode_collapse" in wanted:
            out["class_coverage"], out["class_entropy"] = class_coverage(predicted.numpy(), reference.num_classes)
        if "label_adherence" in wanted and labels is not None:
            out.update(_label_adherence(predicted, labels.cpu(), features_by_space.get(classifier.name),
                                        reference.class_moments.get(classifier.name), classifier.name))
    return EvaluationResult(out, int(images.shape[0]), time.perf_counter() - start)


def _predicted_classes(classifier: DomainFeatures, images: torch.Tensor, batch_size: int,
                       should_stop: StopCheck) -> torch.Tensor:
    predicted = []
    for batch in images.split(batch_size):
        check_stop(should_stop)
        predicted.append(classifier.predict(as_unit_float(batch)).cpu())
    return torch.cat(predicted)


def _label_adherence(predicted: torch.Tensor, requested: torch.Tensor, features: np.ndarray | None,
                     moments: tuple[np.ndarray, np.ndarray] | None, space: str) -> dict[str, float]:
    """A conditional generator that ignores its labels draws every class at every label: the
    classifier then agrees with the requested label about 1/C of the time, however good the
    images are (and class coverage stays perfect)."""
    if requested.shape != predicted.shape:
        raise ValueError(f"{requested.shape[0]} labels for {predicted.shape[0]} images")
    out = {"label_accuracy": float((predicted == requested).float().mean())}
    if features is not None and moments is not None:
        means, covs = moments
        distances = []
        for label in range(means.shape[0]):
            mine = features[(requested == label).numpy()]
            if len(mine) >= 2:
                gen = FeatureStatistics.from_features(mine)
                distances.append(frechet_distance(gen.mean, gen.cov, means[label], covs[label]))
        if distances:
            out[f"fd_{space}_class_mean"] = float(np.mean(distances))
            out[f"fd_{space}_class_max"] = float(np.max(distances))
    return out
