"""Quality signals that catch what FD misses, on the real Fashion-MNIST with the domain classifier.

A generator that copies training images is flagged by memorisation (planted copies; the real test
split as the novel control), with held-out probes for idx data and leave-one-out probes for npz data
and image folders (labelled, and unlabelled, where EfficientNet features stand in for the domain
classifier's), which have no test split. A conditional generator trained on shuffled labels draws good images that
ignore their labels: label adherence flags it (the domain classifier agrees with the requested
label at chance), and so does per-class FD."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from ganforge.api.training_job import DatasetSpec, EvaluationSpec, FeatureExtractorName, GANTrainingJobSpec
from ganforge.models import build_models
from ganforge.trainer import cli
from ganforge.trainer.data import ImageDataset, load_dataset
from ganforge.trainer.evaluation_suite import build_suite
from tests.integration.trainer.launch import FASHION_MNIST, load_checkpoint, write_spec


class Replay(nn.Module):
    """A stand-in "generator" that returns the given uint8 images in order, whatever z says."""

    def __init__(self, images: torch.Tensor) -> None:
        super().__init__()
        self.images, self.position = images, 0

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        batch = self.images[self.position : self.position + z.shape[0]]
        self.position += z.shape[0]
        return batch.float() / 127.5 - 1.0


def _memorization(suite_data: ImageDataset, images: torch.Tensor, cache_dir: Path,
                  extractor: FeatureExtractorName = "domain") -> float:
    # EfficientNet at 64 px: the unlabelled case has no domain classifier, and 224 px is slow on a CPU.
    spec = EvaluationSpec(num_samples=1000, feature_extractors=[extractor], metrics=["memorization"],
                          effnet_resolution=64)
    suite = build_suite(spec, suite_data, cache_dir, torch.device("cpu"))
    result = suite.evaluate(Replay(images), latent_dim=8, num_classes=0, device=torch.device("cpu"), seed=0)
    return result.metrics[f"memorization_{extractor}"]


def _npz(path: Path, images: torch.Tensor, labels: torch.Tensor) -> Path:
    np.savez(path, images=images[:, 0].numpy(), labels=labels.numpy())
    return path


@pytest.mark.timeout(1200)
def test_planted_copies_are_flagged_by_memorisation_for_idx_and_npz_data(tmp_path: Path, cache_dir: Path) -> None:
    fashion = load_dataset(DatasetSpec(uri=f"file://{FASHION_MNIST}", format="idx", resolution=32))
    assert fashion.held_out is not None
    # The test split beyond the 2000 images used as probes is novel to the training set.
    novel, copies = fashion.held_out[4000:5000], fashion.images[17000:18000]
    assert _memorization(fashion, copies, cache_dir) > 0.9
    assert _memorization(fashion, novel, cache_dir) < 0.15

    subset = _npz(tmp_path / "subset.npz", fashion.images[:2000], fashion.labels[:2000])
    small = load_dataset(DatasetSpec(uri=str(subset), format="npz", resolution=32))
    assert small.held_out is None  # leave-one-out probes
    assert _memorization(small, fashion.images[500:1500], cache_dir) > 0.9
    assert _memorization(small, novel, cache_dir) < 0.15


def _image_folder(root: Path, images: torch.Tensor, labels: torch.Tensor | None) -> Path:
    """PNG files, one sub-directory per class, or all in `root` when unlabelled."""
    for index, image in enumerate(images[:, 0].numpy()):
        directory = root / f"class-{int(labels[index])}" if labels is not None else root
        directory.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(directory / f"{index:05d}.png")
    return root


@pytest.mark.timeout(1200)
def test_planted_copies_are_flagged_by_memorisation_for_image_folders_labelled_or_not(
        tmp_path: Path, cache_dir: Path) -> None:
    fashion = load_dataset(DatasetSpec(uri=f"file://{FASHION_MNIST}", format="idx", resolution=32))
    assert fashion.held_out is not None
    novel = fashion.held_out[4000:5000]
    for labelled, extractor in ((True, "domain"), (False, "effnetlite0")):
        folder = _image_folder(tmp_path / f"folder-{labelled}", fashion.images[:2000],
                               fashion.labels[:2000] if labelled else None)
        data = load_dataset(DatasetSpec(uri=str(folder), format="image-folder", resolution=32), cache_dir=cache_dir)
        assert (data.labels is not None) == labelled and data.held_out is None  # leave-one-out probes
        # Lossless (in class-directory order): the copies below are exact training images.
        assert sorted(map(bytes, data.images.numpy())) == sorted(map(bytes, fashion.images[:2000].numpy()))
        copies = _memorization(data, fashion.images[500:1500], cache_dir, extractor)  # type: ignore[arg-type]
        control = _memorization(data, novel, cache_dir, extractor)  # type: ignore[arg-type]
        assert copies > 0.9 and control < 0.15, (labelled, extractor, copies, control)


def _train_conditional(tmp_path: Path, cache_dir: Path, name: str, data: Path) -> nn.Module:
    spec = {
        "dataset": {"uri": str(data), "format": "npz", "resolution": 32, "conditional": True},
        "model": {"architecture": "dcgan", "latentDim": 64, "width": 32, "ema": {"halfLifeKimg": 2}},
        "training": {"totalKimg": 25.6, "batchSize": 64, "reportIntervalKimg": 6.4, "sampleIntervalKimg": 0},
        "resources": {"workers": 1, "gpusPerWorker": 0},
        "checkpoint": {"intervalKimg": 100},
        "evaluation": {"metrics": []},
    }
    config = write_spec(tmp_path / f"{name}.yaml", spec)
    code = cli.main(["--config", str(config), "--run-dir", str(tmp_path / name), "--cache-dir", str(cache_dir),
                     "--threads", "2", "--no-tensorboard", "--device", "cpu"])
    assert code == 0
    validated = GANTrainingJobSpec.model_validate(yaml.safe_load(config.read_text())["spec"])
    generator, _ = build_models(validated.model, 32, 1, 10)
    generator.load_state_dict(load_checkpoint(tmp_path / name / "checkpoints" / "ckpt-000000025600")["G_ema"])
    return generator.eval()


@pytest.mark.timeout(1800)
def test_a_generator_trained_on_shuffled_labels_is_flagged_by_label_adherence(tmp_path: Path,
                                                                              cache_dir: Path) -> None:
    fashion = load_dataset(DatasetSpec(uri=f"file://{FASHION_MNIST}", format="idx", resolution=32))
    assert fashion.labels is not None
    images, labels = fashion.images[:10000], fashion.labels[:10000]
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    honest = _train_conditional(tmp_path, cache_dir, "honest", _npz(tmp_path / "true.npz", images, labels))
    ignoring = _train_conditional(tmp_path, cache_dir, "shuffled", _npz(tmp_path / "shuffled.npz", images, shuffled))

    # Judged by the domain classifier of the true labels.
    spec = EvaluationSpec(num_samples=1000, feature_extractors=["domain"], metrics=["label_adherence"])
    suite = build_suite(spec, fashion, cache_dir, torch.device("cpu"))
    scores = {name: suite.evaluate(generator, 64, 10, torch.device("cpu"), seed=0).metrics
              for name, generator in (("honest", honest), ("shuffled", ignoring))}
    assert scores["shuffled"]["label_accuracy"] < 0.2, scores  # chance is 0.1
    assert scores["honest"]["label_accuracy"] > 0.5, scores
    assert scores["shuffled"]["fd_domain_class_mean"] > scores["honest"]["fd_domain_class_mean"], scores
