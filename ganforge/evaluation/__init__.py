"""Evaluation that can be imported on its own (the serving canary gate reuses it on images
generated through Triton): `evaluate_images(images, reference, extractors)` is a pure function of
the images, the cached reference statistics and the (deterministic) feature extractors."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Sequence
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
from ganforge.evaluation.metrics import (
    FeatureStatistics,
    class_coverage,
    frechet_distance,
    kernel_inception_distance,
    nearest_neighbour_distances,
    precision_recall,
)

__all__ = ["ALL_METRICS", "EvaluationInterrupted", "EvaluationResult", "ReferenceStatistics", "evaluate_images"]

ALL_METRICS: tuple[str, ...] = get_args(MetricName)  # the API's list, in its order
REFERENCE_META = "reference.json"


@dataclass
class ReferenceStatistics:
    """Real-data statistics per feature space, keyed by extractor name."""

    dataset_hash: str
    num_classes: int
    features: dict[str, FeatureStatistics]
    # Median distance from held-out real images to their nearest training image (same sample):
    # the yardstick that makes generated->train distances interpretable.
    heldout_nn_median: dict[str, float] = field(default_factory=dict)

    def to_files(self) -> dict[str, bytes]:
        """One .npz per feature space plus reference.json: what a directory (or an artifact) holds."""
        files: dict[str, bytes] = {}
        for name, stats in self.features.items():
            buffer = io.BytesIO()
            stats.save(buffer)
            files[f"{name}.npz"] = buffer.getvalue()
        meta = {"datasetHash": self.dataset_hash, "numClasses": self.num_classes,
                "extractors": sorted(self.features), "heldoutNnMedian": self.heldout_nn_median}
        files[REFERENCE_META] = (json.dumps(meta, indent=2) + "\n").encode()
        return files

    @classmethod
    def from_files(cls, read: Callable[[str], bytes]) -> ReferenceStatistics:
        meta = json.loads(read(REFERENCE_META))
        features = {name: FeatureStatistics.load(io.BytesIO(read(f"{name}.npz"))) for name in meta["extractors"]}
        return cls(meta["datasetHash"], int(meta["numClasses"]), features, dict(meta["heldoutNnMedian"]))

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
) -> EvaluationResult:
    """Metrics of generated images (uint8 [N,C,H,W] or float in [-1, 1]) against `reference`.

    Names say which feature space they use: fd_<extractor>, kid_<extractor> (+ _std),
    precision_<extractor>, recall_<extractor> (k = 3), memorization_nn_ratio_<extractor>
    (median generated->train NN distance over held-out->train; well below 1 means copying), and
    class_coverage / class_entropy from the domain classifier. `should_stop` is asked between
    batches and between metrics; when it says yes, EvaluationInterrupted is raised."""
    start = time.perf_counter()
    if images.ndim != 4:
        raise ValueError(f"expected images [N, C, H, W], got {tuple(images.shape)}")
    wanted = set(metrics)
    out: dict[str, float] = {}
    for extractor in extractors:
        if extractor.name not in reference.features:
            raise KeyError(f"no reference statistics for feature extractor {extractor.name!r}")
        ref = reference.features[extractor.name]
        feats = extract(extractor, images, batch_size, should_stop).numpy()
        gen = FeatureStatistics.from_features(feats)
        check_stop(should_stop)
        if "fd" in wanted:
            out[f"fd_{extractor.name}"] = frechet_distance(gen.mean, gen.cov, ref.mean, ref.cov)
        if "kid" in wanted:
            mean, std = kernel_inception_distance(gen.sample, ref.sample, subsets=50, subset_size=1000)
            out[f"kid_{extractor.name}"], out[f"kid_{extractor.name}_std"] = mean, std
            check_stop(should_stop)
        if "precision_recall" in wanted:
            n = min(len(gen.sample), len(ref.sample))
            out[f"precision_{extractor.name}"], out[f"recall_{extractor.name}"] = precision_recall(
                ref.sample[:n], gen.sample[:n], k=3
            )
            check_stop(should_stop)
        if "memorization" in wanted and extractor.name in reference.heldout_nn_median:
            gen_nn = float(np.median(nearest_neighbour_distances(gen.sample, ref.sample)))
            out[f"nn_dist_gen_train_{extractor.name}"] = gen_nn
            yardstick = max(reference.heldout_nn_median[extractor.name], 1e-12)
            out[f"memorization_nn_ratio_{extractor.name}"] = gen_nn / yardstick
    if "mode_collapse" in wanted and classifier is not None and reference.num_classes:
        predicted = torch.cat([classifier.predict(as_unit_float(b)).cpu() for b in images.split(batch_size)])
        out["class_coverage"], out["class_entropy"] = class_coverage(predicted.numpy(), reference.num_classes)
    return EvaluationResult(out, int(images.shape[0]), time.perf_counter() - start)
