"""Everything the trainer needs to evaluate a generator: extractors, cached reference statistics,
and the generation of evaluation samples (own RNG, so evaluating never perturbs training)."""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
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
from ganforge.evaluation.memorization import PROBES, MemorizationReference
from ganforge.evaluation.metrics import FeatureStatistics
from ganforge.trainer.data import ImageDataset
from ganforge.trainer.errors import EvaluationError

log = logging.getLogger(__name__)
CLASSIFIER_STEPS = 300


@torch.no_grad()
def generate_in_batches(generator: nn.Module, z: torch.Tensor, labels: torch.Tensor | None, batch_size: int,
                        should_stop: StopCheck = never) -> torch.Tensor:
    """generator(z, labels) as uint8 on the CPU, `batch_size` samples at a time; raises
    EvaluationInterrupted within one batch of `should_stop()` turning true."""
    images = []
    for start in range(0, len(z), batch_size):
        check_stop(should_stop)
        batch_labels = labels[start : start + batch_size] if labels is not None else None
        images.append(to_uint8(generator(z[start : start + batch_size], batch_labels)).cpu())
    return torch.cat(images)


@dataclass
class EvaluationSuite:
    spec: EvaluationSpec
    extractors: list[FeatureExtractor]
    reference: ReferenceStatistics
    classifier: DomainFeatures | None
    classifier_accuracy: float | None
    memorization: dict[str, MemorizationReference] = field(default_factory=dict)

    @torch.no_grad()
    def generate(self, generator: nn.Module, latent_dim: int, num_classes: int, device: torch.device,
                 seed: int, batch_size: int = 256,
                 should_stop: StopCheck = never) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`num_samples` images (uint8, on the CPU) and the labels they were generated for."""
        rng = torch.Generator(device="cpu").manual_seed(seed + 0x5EED)
        n = self.spec.num_samples
        images = []
        # Balanced labels: mode collapse should show in the classifier, not in the label draw.
        labels = torch.arange(n) % num_classes if num_classes else None
        for start in range(0, n, batch_size):
            check_stop(should_stop)
            count = min(batch_size, n - start)
            z = torch.randn(count, latent_dim, generator=rng).to(device)
            batch_labels = labels[start : start + count].to(device) if labels is not None else None
            images.append(to_uint8(generator(z, batch_labels)).cpu())
        return torch.cat(images), labels

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
            images, labels = self.generate(generator, latent_dim, num_classes, device, seed, should_stop=should_stop)
        finally:
            generator.train(was_training)
        return evaluate_images(images, self.reference, self.extractors, self.spec.metrics, self.classifier,
                               should_stop=should_stop, labels=labels, memorization=self.memorization)


def _reference_subset(dataset: ImageDataset, count: int) -> torch.Tensor:
    """Indices of a seeded subset of `count` training images, in dataset order."""
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(1234))[:count]
    return order.sort().values


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

    order = _reference_subset(dataset, min(spec.num_samples, len(dataset)))
    reals = dataset.images[order]
    features: dict[str, FeatureStatistics] = {}
    class_moments: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    memorization: dict[str, MemorizationReference] = {}
    for extractor in extractors:
        key = f"reference-{dataset_hash}-{_extractor_key(extractor, spec)}-{reals.shape[0]}"
        try:
            cached = ReferenceStatistics.load(cache_dir / key)
            features[extractor.name] = cached.features[extractor.name]
            class_moments.update(cached.class_moments)
        except (OSError, KeyError, ValueError):
            feats = extract(extractor, reals)
            one = ReferenceStatistics(dataset_hash, dataset.num_classes,
                                      {extractor.name: FeatureStatistics.from_features(feats)})
            if extractor is classifier and dataset.labels is not None:
                one.class_moments[extractor.name] = _class_moments(feats.numpy(), dataset.labels[order].numpy(),
                                                                   dataset.num_classes)
            _cache_directory(cache_dir, key, one.save)
            features[extractor.name] = one.features[extractor.name]
            class_moments.update(one.class_moments)
        if "memorization" in spec.metrics:
            memorization[extractor.name] = _memorization_reference(extractor, dataset, spec, cache_dir, dataset_hash)
    reference = ReferenceStatistics(dataset_hash, dataset.num_classes, features, class_moments=class_moments)
    return EvaluationSuite(spec, extractors, reference, classifier, accuracy, memorization)


def _class_moments(features: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    dim = features.shape[1]
    means, covs = np.zeros((num_classes, dim)), np.zeros((num_classes, dim, dim))
    for label in range(num_classes):
        mine = features[labels == label].astype(np.float64)
        if len(mine) >= 2:
            means[label], covs[label] = mine.mean(axis=0), np.cov(mine, rowvar=False)
    return means, covs


def _memorization_reference(extractor: FeatureExtractor, dataset: ImageDataset, spec: EvaluationSpec,
                            cache_dir: Path, dataset_hash: str) -> MemorizationReference:
    """Features of the training images the memorisation signal searches (all, or a seeded subset),
    computed once per dataset and feature space and cached."""
    count = min(spec.memorization_train_images or len(dataset), len(dataset))
    key = f"memorization-{dataset_hash}-{_extractor_key(extractor, spec)}-{count}.npz"
    try:
        return MemorizationReference.from_bytes((cache_dir / key).read_bytes())
    except (OSError, KeyError, ValueError):
        pass
    start = time.perf_counter()
    picked = _reference_subset(dataset, count) if count < len(dataset) else torch.arange(len(dataset))
    train = extract(extractor, dataset.images[picked]).numpy()
    held = extract(extractor, dataset.held_out[:PROBES]).numpy() if dataset.held_out is not None else None
    built = MemorizationReference.build(train, held)
    log.info("memorisation reference for %s: %d training images, %s probes, %.1fs", extractor.name, count,
             built.probe, time.perf_counter() - start)
    _cache_directory(cache_dir, key, lambda path: path.write_bytes(built.to_bytes()))
    return built


def _cache_directory(cache_dir: Path, key: str, write: Callable[[Path], object]) -> None:
    """Write a cache entry under a temporary name, then rename: another rank or run may race."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".{key}.{uuid.uuid4().hex[:6]}"
    write(tmp)
    try:
        tmp.rename(cache_dir / key)
    except OSError:  # another process cached it first
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
