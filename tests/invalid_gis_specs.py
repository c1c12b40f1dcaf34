"""GANInferenceService manifests that both pydantic and the apiserver (through the CRD) must reject.

Each case names the fields its error must mention, as camelCase paths (`spec.triton.replicas`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ganforge.api.inference_service import KIND, MAX_SERVICE_NAME_LENGTH
from ganforge.api.training_job import API_VERSION, MIN_GATE_SAMPLES
from tests.invalid_specs import DROP, changed

MANIFEST_SHA256 = "0123456789abcdef" * 4

VALID_SPEC: dict[str, Any] = {
    "modelName": "fashion",
    "source": {"artifact": {"uri": "pvc://models/fashion/r0123456789", "sha256": MANIFEST_SHA256}},
    "triton": {"replicas": 2, "cpu": "500m", "memory": "1Gi", "instances": 2, "threads": 1},
}
# Everything else defaulted: what a user writes for the model of a training job.
MINIMAL_SPEC: dict[str, Any] = {"source": {"trainingJob": "fashion-mnist-dcgan"}}
BOTH_SOURCES = ("spec.source.trainingJob", "spec.source.artifact")


def manifest(name: str, spec: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
    metadata = {"name": name} if namespace is None else {"name": name, "namespace": namespace}
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}


@dataclass(frozen=True)
class InvalidGisSpec:
    id: str
    fields: tuple[str, ...]
    changes: dict[str, Any]
    name: str = "invalid-gis"

    def manifest(self, namespace: str | None = None) -> dict[str, Any]:
        return manifest(self.name, changed(VALID_SPEC, self.changes), namespace)


def _artifact(**changes: Any) -> dict[str, Any]:
    return {"source": {"artifact": changes}}


INVALID_GIS_SPECS: tuple[InvalidGisSpec, ...] = (
    InvalidGisSpec("missing-source", ("spec.source",), {"source": DROP}),
    InvalidGisSpec("no-source", BOTH_SOURCES, {"source": {"artifact": DROP}}),
    InvalidGisSpec("both-sources", BOTH_SOURCES, {"source": {"trainingJob": "fashion-mnist-dcgan"}}),
    InvalidGisSpec("artifact-uri-not-pvc", ("spec.source.artifact.uri",), _artifact(uri="file:///models/fashion")),
    InvalidGisSpec("artifact-uri-bad-claim", ("spec.source.artifact.uri",), _artifact(uri="pvc://Bad_Claim/x")),
    InvalidGisSpec("artifact-uri-no-claim", ("spec.source.artifact.uri",), _artifact(uri="pvc:///fashion")),
    InvalidGisSpec("sha256-too-short", ("spec.source.artifact.sha256",), _artifact(sha256=MANIFEST_SHA256[:63])),
    InvalidGisSpec("sha256-too-long", ("spec.source.artifact.sha256",), _artifact(sha256=MANIFEST_SHA256 + "0")),
    InvalidGisSpec("sha256-uppercase", ("spec.source.artifact.sha256",), _artifact(sha256=MANIFEST_SHA256.upper())),
    InvalidGisSpec("sha256-missing", ("spec.source.artifact.sha256",), _artifact(sha256=DROP)),
    InvalidGisSpec(
        "training-job-not-a-name",
        ("spec.source.trainingJob",),
        {"source": {"artifact": DROP, "trainingJob": "Fashion_GAN"}},
    ),
    InvalidGisSpec(
        "training-job-name-too-long",
        ("spec.source.trainingJob",),
        {"source": {"artifact": DROP, "trainingJob": "j" * 41}},
    ),
    InvalidGisSpec("zero-replicas", ("spec.triton.replicas",), {"triton": {"replicas": 0}}),
    InvalidGisSpec("too-many-replicas", ("spec.triton.replicas",), {"triton": {"replicas": 101}}),
    InvalidGisSpec("bad-cpu", ("spec.triton.cpu",), {"triton": {"cpu": "two"}}),
    InvalidGisSpec("bad-memory", ("spec.triton.memory",), {"triton": {"memory": "2 GB"}}),
    InvalidGisSpec("bad-model-volume-size", ("spec.triton.modelVolume.sizeLimit",),
                   {"triton": {"modelVolume": {"sizeLimit": "lots"}}}),
    InvalidGisSpec("unknown-model-volume-medium", ("spec.triton.modelVolume.medium",),
                   {"triton": {"modelVolume": {"medium": "HugePages"}}}),
    InvalidGisSpec("zero-batch", ("spec.triton.maxBatchSize",), {"triton": {"maxBatchSize": 0}}),
    InvalidGisSpec(
        "negative-queue-delay",
        ("spec.triton.maxQueueDelayMicroseconds",),
        {"triton": {"maxQueueDelayMicroseconds": -1}},
    ),
    InvalidGisSpec("zero-instances", ("spec.triton.instances",), {"triton": {"instances": 0}}),
    InvalidGisSpec("zero-threads", ("spec.triton.threads",), {"triton": {"threads": 0}}),
    InvalidGisSpec("steps-short-of-100", ("spec.rollout.steps",), {"rollout": {"steps": [10, 50]}}),
    InvalidGisSpec("steps-unsorted", ("spec.rollout.steps",), {"rollout": {"steps": [50, 10, 100]}}),
    InvalidGisSpec("negative-kid-margin", ("spec.rollout.gates.quality.kidMargin",),
                   {"rollout": {"gates": {"quality": {"kidMargin": -0.001}}}}),
    InvalidGisSpec("sample-size-below-kid-minimum", ("spec.rollout.gates.quality.sampleSize",),
                   {"rollout": {"gates": {"quality": {"sampleSize": MIN_GATE_SAMPLES - 1}}}}),
    InvalidGisSpec("confidence-above-one", ("spec.rollout.gates.quality.confidence",),
                   {"rollout": {"gates": {"quality": {"confidence": 1.5}}}}),
    InvalidGisSpec("negative-failure-limit", ("spec.rollout.failureLimit",), {"rollout": {"failureLimit": -1}}),
    InvalidGisSpec("zero-p95-bound", ("spec.rollout.gates.serving.p95LatencyMs",),
                   {"rollout": {"gates": {"serving": {"p95LatencyMs": 0}}}}),
    InvalidGisSpec("unknown-approval", ("spec.rollout.approval",), {"rollout": {"approval": "sometimes"}}),
    InvalidGisSpec("unknown-strategy", ("spec.rollout.strategy",), {"rollout": {"strategy": "shadow"}}),
    InvalidGisSpec("gateway-without-name", ("spec.gateway.name",), {"gateway": {"namespace": "edge"}}),
    InvalidGisSpec("gateway-bad-hostname", ("spec.gateway.hostnames",),
                   {"gateway": {"name": "edge", "hostnames": ["Gen_Example.com"]}}),
    InvalidGisSpec("gateway-negative-drain", ("spec.gateway.drainSeconds",),
                   {"gateway": {"name": "edge", "drainSeconds": -1}}),
    InvalidGisSpec("model-name-with-space", ("spec.modelName",), {"modelName": "fashion gen"}),
    InvalidGisSpec("model-name-with-dot", ("spec.modelName",), {"modelName": "fashion.gen"}),
    InvalidGisSpec("model-name-too-long", ("spec.modelName",), {"modelName": "m" * 65}),
    InvalidGisSpec("unknown-field", ("spec.triton.bogus",), {"triton": {"bogus": 1}}),
    InvalidGisSpec("name-too-long", ("metadata.name",), {}, name="n" * (MAX_SERVICE_NAME_LENGTH + 1)),
    # Services are named after it: a dot or a leading digit would fail every one of them.
    InvalidGisSpec("name-with-dot", ("metadata.name",), {"modelName": DROP}, name="fashion.gen"),
    InvalidGisSpec("name-leading-digit", ("metadata.name",), {}, name="1fashion"),
)
