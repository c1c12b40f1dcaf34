"""Everything the trainer needs to evaluate a generator: extractors, cached reference statistics,
and the generation of evaluation samples (own RNG, so evaluating never perturbs training)."""

from __future__ import annotations

import hashlib
import logging
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ganforge.api.training_job import EvaluationSpec
from ganforge.evaluation import EvaluationResult, ReferenceStatistics, evaluate_images
from ganforge.evaluation.domain_classifier import CLASSIFIER_FILE, TrainedClassifier, load_or_train
from ganforge.evaluation.domain_classifier import VERSION as CLASSIFIER_VERSION
from ganforge.evaluation.features import (
    DomainFeatures,
    EffNetLite0Features,
    FeatureExtractor,
    StopCheck,
    TorchScriptFeatures,
    check_stop,
    extract,
    never,
)
from ganforge.evaluation.images import to_uint8
from ganforge.evaluation.metrics import FeatureStatistics, nearest_neighbour_distances
from ganforge.trainer.data import ImageDataset
from ganforge.trainer.errors import EvaluationError

log = logging.getLogger(__name__)
CLASSIFIER_STEPS = 300


@dataclass
class EvaluationSuite:
    spec: EvaluationSpec
    extractors: list[FeatureExtractor]
    reference: ReferenceStatistics
    classifier: DomainFeatures | None
    classifier_accuracy: float | None

    @torch.no_grad()
    def generate(self, generator: nn.Module, latent_dim: int, num_classes: int, device: torch.device,
                 seed: int, batch_size: int = 256, should_stop: StopCheck = never) -> torch.Tensor:
        rng = torch.Generator(device="cpu").manual_seed(seed + 0x5EED)
        n = self.spec.num_samples
        images = []
        for start in range(0, n, batch_size):
            check_stop(should_stop)
            count = min(batch_size, n - start)
            z = torch.randn(count, latent_dim, generator=rng).to(device)
            # Balanced labels: mode collapse should show in the classifier, not in the label draw.
            labels = (torch.arange(start, start + count) % num_classes).to(device) if num_classes else None
            images.append(to_uint8(generator(z, labels)).cpu())
        return torch.cat(images)

    def reference_files(self) -> dict[str, bytes]:
        """What the checkpoints (and so every exported artifact) carry for later quality checks:
        the reference statistics and, when it is one of the feature spaces, the domain classifier."""
        files = self.reference.to_files()
        if self.classifier is not None and self.classifier_accuracy is not None:
            files[CLASSIFIER_FILE] = TrainedClassifier(self.classifier.classifier, self.classifier_accuracy).to_bytes()
        return files

    def evaluate(self, generator: nn.Module, latent_dim: int, num_classes: int, device: torch.device,
                 seed: int, should_stop: StopCheck = never) -> EvaluationResult:
        """Raises EvaluationInterrupted within one batch of `should_stop()` turning true."""
        was_training = generator.training
        generator.eval()
        try:
            images = self.generate(generator, latent_dim, num_classes, device, seed, should_stop=should_stop)
        finally:
            generator.train(was_training)
        return evaluate_images(images, self.reference, self.extractors, self.spec.metrics, self.classifier,
                               should_stop=should_stop)


def _reference_subset(dataset: ImageDataset, count: int) -> torch.Tensor:
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(1234))[:count]
    return dataset.images[order.sort().values]


def _extractor_key(extractor: FeatureExtractor, spec: EvaluationSpec) -> str:
    if isinstance(extractor, EffNetLite0Features):
        return f"effnetlite0-r{extractor.resolution}"
    if isinstance(extractor, DomainFeatures):
        return f"domain-v{CLASSIFIER_VERSION}-{CLASSIFIER_STEPS}"
    assert spec.custom_extractor is not None
    digest = hashlib.sha256(Path(spec.custom_extractor.path).read_bytes()).hexdigest()[:12]
    return f"{extractor.name}-{digest}-r{spec.custom_extractor.resolution}"


def build_suite(spec: EvaluationSpec, dataset: ImageDataset, cache_dir: Path, device: torch.device) -> EvaluationSuite:
    dataset_hash = dataset.content_hash()
    extractors: list[FeatureExtractor] = []
    classifier: DomainFeatures | None = None
    accuracy = None
    held = None
    if dataset.held_out is not None and dataset.held_out_labels is not None:
        held = (dataset.held_out, dataset.held_out_labels)
    for name in spec.feature_extractors:
        try:
            if name == "effnetlite0":
                extractors.append(EffNetLite0Features(device, spec.effnet_resolution))
            elif name == "domain":
                if dataset.labels is None:
                    log.warning("dataset has no labels: the domain classifier (fd_domain, mode collapse) is skipped")
                    continue
                trained = load_or_train(cache_dir, dataset_hash, dataset.images, dataset.labels,
                                        dataset.num_classes, held, device, steps=CLASSIFIER_STEPS)
                classifier = DomainFeatures(trained.model, device)
                accuracy = trained.accuracy
                extractors.append(classifier)
            else:
                custom = spec.custom_extractor
                assert custom is not None  # enforced by the spec validator
                extractors.append(TorchScriptFeatures(custom.path, custom.name, custom.resolution, device))
        except (OSError, RuntimeError, ValueError, ImportError) as error:
            raise EvaluationError(f"spec.evaluation.featureExtractors {name}: cannot load: {error}") from None

    reals = _reference_subset(dataset, min(spec.num_samples, len(dataset)))
    features: dict[str, FeatureStatistics] = {}
    heldout: dict[str, float] = {}
    for extractor in extractors:
        key = f"reference-{dataset_hash}-{_extractor_key(extractor, spec)}-{reals.shape[0]}"
        directory = cache_dir / key
        try:
            cached = ReferenceStatistics.load(directory)
            features[extractor.name] = cached.features[extractor.name]
            heldout.update(cached.heldout_nn_median)
            continue
        except (OSError, KeyError, ValueError):
            pass
        stats = FeatureStatistics.from_features(extract(extractor, reals))
        features[extractor.name] = stats
        one = ReferenceStatistics(dataset_hash, dataset.num_classes, {extractor.name: stats})
        if dataset.held_out is not None:
            held_feats = extract(extractor, dataset.held_out[: len(stats.sample)]).numpy()
            distances = nearest_neighbour_distances(held_feats, stats.sample)
            one.heldout_nn_median[extractor.name] = float(np.median(distances))
            heldout.update(one.heldout_nn_median)
        tmp = cache_dir / f".{key}.{uuid.uuid4().hex[:6]}"
        one.save(tmp)
        try:
            tmp.rename(directory)
        except OSError:  # another process cached it first
            shutil.rmtree(tmp, ignore_errors=True)
    reference = ReferenceStatistics(dataset_hash, dataset.num_classes, features, heldout)
    return EvaluationSuite(spec, extractors, reference, classifier, accuracy)
