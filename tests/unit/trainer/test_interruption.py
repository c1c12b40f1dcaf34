"""A preemption must reach rank 0 within one batch of whatever it is doing alone: the gang waits
for it at the next step. Evaluation's feature extraction and generation are covered by the
integration tests; these are the smaller loops (label prediction, the sample grid)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ganforge.evaluation import EvaluationInterrupted, ReferenceStatistics, evaluate_images
from ganforge.evaluation.domain_classifier import DomainClassifier
from ganforge.evaluation.features import DomainFeatures
from ganforge.trainer.evaluation_suite import generate_in_batches


class _CountingClassifier(DomainFeatures):
    def __init__(self) -> None:
        super().__init__(DomainClassifier(channels=1, num_classes=4), torch.device("cpu"))
        self.batches = 0

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        self.batches += 1
        return super().predict(images)


class _CountingGenerator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.batches = 0

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        self.batches += 1
        return torch.tanh(z[:, :16].reshape(-1, 1, 4, 4))


def test_label_prediction_stops_within_one_batch() -> None:
    classifier = _CountingClassifier()
    images = torch.zeros(1000, 1, 16, 16, dtype=torch.uint8)
    reference = ReferenceStatistics("hash", 4, {})
    with pytest.raises(EvaluationInterrupted):
        evaluate_images(images, reference, [], metrics=["mode_collapse", "label_adherence"], classifier=classifier,
                        batch_size=100, labels=torch.arange(1000) % 4, should_stop=lambda: classifier.batches >= 1)
    assert classifier.batches == 1

    # Not asked to stop: every batch is classified and the metrics are there.
    classifier.batches = 0
    result = evaluate_images(images, reference, [], metrics=["mode_collapse", "label_adherence"],
                             classifier=classifier, batch_size=100, labels=torch.arange(1000) % 4)
    assert classifier.batches == 10 and {"class_coverage", "label_accuracy"} <= set(result.metrics)


def test_the_sample_grid_is_drawn_row_by_row_and_stops_within_one_row() -> None:
    generator = _CountingGenerator()
    z, labels = torch.randn(64, 16), torch.arange(64) % 8
    with pytest.raises(EvaluationInterrupted):
        generate_in_batches(generator, z, labels, 8, should_stop=lambda: generator.batches >= 1)
    assert generator.batches == 1

    generator.batches = 0
    images = generate_in_batches(generator, z, labels, 8)
    assert generator.batches == 8 and images.dtype == torch.uint8 and images.shape == (64, 1, 4, 4)
    assert torch.equal(images, generate_in_batches(generator, z, labels, 64))  # batching changes nothing
