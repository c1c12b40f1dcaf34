"""GANTrainingJob manifests that both pydantic and the apiserver (through the CRD) must reject.

Each case names the field its error must mention; the apiserver reports camelCase paths, e.g.
`spec.resources.workers`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from ganforge.api.training_job import API_VERSION, KIND, MAX_JOB_NAME_LENGTH

VALID_SPEC: dict[str, Any] = {
    "dataset": {"uri": "fake://blobs?n=256&classes=4", "format": "fake", "resolution": 16},
    "resources": {"workers": 2, "gpusPerWorker": 0, "cpu": "1", "memory": "2Gi"},
    "training": {"batchSize": 32, "totalKimg": 10},
    "checkpoint": {"uri": "pvc://checkpoints/valid-job"},
}

# Stands for "remove this key" in a change.
DROP = object()


def changed(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` merged in: dicts recursively, everything else replaced; DROP removes."""
    result = copy.deepcopy(base)
    for key, value in changes.items():
        if value is DROP:
            result.pop(key, None)
        elif isinstance(value, dict):
            current = result.get(key)
            result[key] = changed(current if isinstance(current, dict) else {}, value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def manifest(name: str, spec: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
    metadata = {"name": name} if namespace is None else {"name": name, "namespace": namespace}
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}


def _rollout(*steps: int) -> dict[str, Any]:
    return {"rollout": {"service": "fashion", "steps": list(steps)}}


@dataclass(frozen=True)
class InvalidSpec:
    id: str
    field: str
    changes: dict[str, Any]
    name: str = "invalid-job"

    def manifest(self, namespace: str | None = None) -> dict[str, Any]:
        return manifest(self.name, changed(VALID_SPEC, self.changes), namespace)


INVALID_SPECS: tuple[InvalidSpec, ...] = (
    InvalidSpec("zero-workers", "spec.resources.workers", {"resources": {"workers": 0}}),
    InvalidSpec("negative-workers", "spec.resources.workers", {"resources": {"workers": -2}}),
    InvalidSpec("zero-batch", "spec.training.batchSize", {"training": {"batchSize": 0}}),
    InvalidSpec("zero-latent", "spec.model.latentDim", {"model": {"latentDim": 0}}),
    InvalidSpec("huge-latent", "spec.model.latentDim", {"model": {"latentDim": 5000}}),
    InvalidSpec("unknown-architecture", "spec.model.architecture", {"model": {"architecture": "stylegan3"}}),
    InvalidSpec("unknown-loss", "spec.model.loss", {"model": {"loss": "lsgan"}}),
    InvalidSpec("unknown-precision", "spec.training.precision", {"training": {"precision": "fp8"}}),
    InvalidSpec("onnx-opset-before-15", "spec.export.onnxOpset", {"export": {"onnxOpset": 14}}),
    InvalidSpec("onnx-opset-after-22", "spec.export.onnxOpset", {"export": {"onnxOpset": 23}}),
    InvalidSpec("model-repository-not-a-claim", "spec.export.modelRepository",
                {"export": {"modelRepository": "s3://bucket/models"}}),
    # Served revisions must never share the fate of the job's checkpoint claim.
    InvalidSpec("model-repository-on-checkpoint-claim", "spec.export.modelRepository",
                {"export": {"modelRepository": "pvc://checkpoints/models"}}),
    InvalidSpec("model-repository-on-default-checkpoint-claim", "spec.export.modelRepository",
                {"checkpoint": DROP, "export": {"modelRepository": "pvc://invalid-job-checkpoints"}}),
    InvalidSpec("batch-not-divisible", "spec.training.batchSize", {"training": {"batchSize": 33}}),
    # 2 workers x 3 processes = 6 ranks do not split 32 images.
    InvalidSpec("batch-not-divisible-by-ranks", "spec.training.batchSize",
                {"resources": {"processesPerWorker": 3}}),
    InvalidSpec("processes-not-one-per-gpu", "spec.resources.processesPerWorker",
                {"resources": {"gpusPerWorker": 2, "processesPerWorker": 1}}),
    InvalidSpec("zero-processes", "spec.resources.processesPerWorker", {"resources": {"processesPerWorker": 0}}),
    InvalidSpec("missing-dataset", "spec.dataset", {"dataset": DROP}),
    InvalidSpec("missing-dataset-uri", "spec.dataset.uri", {"dataset": {"uri": DROP}}),
    InvalidSpec("http-dataset-uri", "spec.dataset.uri", {"dataset": {"uri": "http://x"}}),
    InvalidSpec("bad-claim-dataset-uri", "spec.dataset.uri", {"dataset": {"uri": "pvc://Bad_Claim/x"}}),
    InvalidSpec("relative-dataset-uri", "spec.dataset.uri", {"dataset": {"uri": "data/fashion"}}),
    InvalidSpec("relative-checkpoint-uri", "spec.checkpoint.uri", {"checkpoint": {"uri": "ckpt/run1"}}),
    InvalidSpec("bad-claim-checkpoint-uri", "spec.checkpoint.uri", {"checkpoint": {"uri": "pvc://Bad_Claim/x"}}),
    InvalidSpec("file-checkpoint-uri-not-absolute", "spec.checkpoint.uri", {"checkpoint": {"uri": "file://ckpt"}}),
    InvalidSpec("resolution-not-power-of-two", "spec.dataset.resolution", {"dataset": {"resolution": 48}}),
    InvalidSpec("negative-total-kimg", "spec.training.totalKimg", {"training": {"totalKimg": -5}}),
    InvalidSpec("bad-cpu", "spec.resources.cpu", {"resources": {"cpu": "four"}}),
    InvalidSpec("bad-memory", "spec.resources.memory", {"resources": {"memory": "16 GB"}}),
    InvalidSpec("cpu-with-trailing-newline", "spec.resources.cpu", {"resources": {"cpu": "4\n"}}),
    InvalidSpec("zero-keep-last", "spec.checkpoint.keepLast", {"checkpoint": {"keepLast": 0}}),
    InvalidSpec("too-many-gpus", "spec.resources.gpusPerWorker", {"resources": {"gpusPerWorker": 17}}),
    InvalidSpec(
        "wgan-gp-without-penalty",
        "spec.model.regularization.gpLambda",
        {"model": {"loss": "wgan-gp", "regularization": {"gpLambda": 0}}},
    ),
    InvalidSpec(
        "compile-channels-last-on-gpus",
        "spec.training.channelsLast",
        {"resources": {"gpusPerWorker": 1}, "training": {"compile": True, "channelsLast": True}},
    ),
    InvalidSpec(
        "sngan-below-16",
        "spec.dataset.resolution",
        {"dataset": {"resolution": 8}, "model": {"architecture": "sngan-resnet"}},
    ),
    InvalidSpec("rollout-steps-unsorted", "spec.rollout.steps", _rollout(50, 10, 100)),
    InvalidSpec("rollout-steps-short-of-100", "spec.rollout.steps", _rollout(10, 50)),
    # A set-typed list: the apiserver reports the duplicate itself.
    InvalidSpec("rollout-steps-repeated", "spec.rollout.steps", _rollout(10, 10, 100)),
    InvalidSpec("negative-backoff-limit", "spec.backoffLimit", {"backoffLimit": -1}),
    InvalidSpec("unknown-field", "spec.training.bogus", {"training": {"bogus": 1}}),
    InvalidSpec(
        "mode-collapse-without-domain",
        "spec.evaluation.featureExtractors",
        {"evaluation": {"metrics": ["fd", "mode_collapse"], "featureExtractors": ["effnetlite0"]}},
    ),
    InvalidSpec(
        "label-adherence-without-domain",
        "spec.evaluation.featureExtractors",
        {"evaluation": {"metrics": ["label_adherence"], "featureExtractors": ["effnetlite0"]}},
    ),
    InvalidSpec("unknown-augmentation", "spec.training.augment.policy",
                {"training": {"augment": {"policy": ["blur"]}}}),
    InvalidSpec("augmentation-twice", "spec.training.augment.policy",
                {"training": {"augment": {"policy": ["cutout", "cutout"]}}}),
    InvalidSpec("adaptive-augmentation-without-policy", "spec.training.augment.adaptive",
                {"training": {"augment": {"xflip": True, "adaptive": {"target": 0.6}}}}),
    InvalidSpec("adaptive-augmentation-with-wgan-gp", "spec.training.augment.adaptive",
                {"model": {"loss": "wgan-gp"}, "training": {"augment": {"policy": ["cutout"], "adaptive": {}}}}),
    InvalidSpec("augmentation-probability-above-one", "spec.training.augment.probability",
                {"training": {"augment": {"policy": ["cutout"], "probability": 1.5}}}),
    InvalidSpec("too-few-memorization-images", "spec.evaluation.memorizationTrainImages",
                {"evaluation": {"memorizationTrainImages": 10}}),
    InvalidSpec(
        "torchscript-without-custom-extractor",
        "spec.evaluation.customExtractor",
        {"evaluation": {"featureExtractors": ["domain", "torchscript"]}},
    ),
    InvalidSpec("name-too-long", "metadata.name", {}, name="n" * (MAX_JOB_NAME_LENGTH + 1)),
    # Services are named after the job: a dot or a leading digit would fail every one of them.
    InvalidSpec("name-with-dot", "metadata.name", {}, name="fashion.gan"),
    InvalidSpec("name-leading-digit", "metadata.name", {}, name="1gan"),
)

# Model repositories whose claim only resembles the checkpoint claim: accepted. The jobs are
# named apart-<index>, so without spec.checkpoint.uri their checkpoint claim is apart-<index>-checkpoints.
MODEL_REPOSITORIES_APART: tuple[dict[str, Any], ...] = (
    changed(VALID_SPEC, {"export": {"modelRepository": "pvc://checkpoints.v2/models"}}),
    changed(VALID_SPEC, {"checkpoint": {"uri": DROP}, "export": {"modelRepository": "pvc://apart-1-checkpoints2"}}),
    changed(VALID_SPEC, {"checkpoint": {"uri": "s3://checkpoints/run"},
                         "export": {"modelRepository": "pvc://checkpoints/models"}}),
)
