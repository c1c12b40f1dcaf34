"""`GANInferenceService`: one served model, its Triton revisions, and which of them is stable or canary.

The same rules as training_job.py apply: the CRD's OpenAPI schema is generated from these models
(ganforge/api/crd.py), so types stay simple and every field carries a description. The operator
runs one Triton Deployment + Service per revision, named `<service>-<revision>`.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, get_args

from pydantic import Field, field_validator, model_validator

from ganforge.api.analysis import Measurement
from ganforge.api.conditions import ConditionFields
from ganforge.api.training_job import API_GROUP as API_GROUP
from ganforge.api.training_job import API_VERSION as API_VERSION
from ganforge.api.training_job import (
    DNS_1035_LABEL_PATTERN,
    DNS_LABEL_PATTERN,
    MAX_JOB_NAME_LENGTH,
    MAX_URI_LENGTH,
    STATUS_CONFIG,
    ApiModel,
    ObjectMeta,
    RolloutPolicy,
    require_pvc_uri,
    require_quantity,
)
from ganforge.api.training_job import VERSION as VERSION

KIND = "GANInferenceService"
PLURAL = "ganinferenceservices"
SHORT_NAME = "gis"

# Deployments and Services are named `<service>-<revision>`: at most 40 + 1 + 11 = 52 characters,
# within the 63 of a DNS label (a Service name) with room for a ReplicaSet's hash suffix.
MAX_SERVICE_NAME_LENGTH = 40
# A revision is "r" + the first 10 hex digits of the sha256 of its manifest.json.
REVISION_PATTERN = r"^r[0-9a-f]{10}$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
# What Triton accepts as a model name (it becomes a directory in the model repository and a URL segment).
MODEL_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"

# Which Triton runs an exported model: `onnxruntime` is the NGC image's ONNX Runtime backend
# (`platform: onnxruntime_onnx`); `python-onnxruntime` runs the same model.onnx through onnxruntime
# inside Triton's python backend (nvidia-pytriton's tritonserver on `ganforge local`).
TritonProfile = Literal["python-onnxruntime", "onnxruntime"]
TRITON_PROFILES: tuple[TritonProfile, ...] = get_args(TritonProfile)

TRITON_HTTP_PORT = 8000
TRITON_GRPC_PORT = 8001
TRITON_METRICS_PORT = 8002


def _matches(pattern: str, value: str) -> bool:
    return re.fullmatch(pattern, value) is not None


def revision_name(manifest_sha256: str) -> str:
    """The revision of the model whose manifest.json has this sha256."""
    if not _matches(SHA256_PATTERN, manifest_sha256):
        raise ValueError(f"not a sha256 hex digest: {manifest_sha256!r}")
    return f"r{manifest_sha256[:10]}"


class ArtifactRef(ApiModel):
    """An exported model revision on a claim, pinned by content."""

    uri: str = Field(
        description="The revision directory: pvc://claim/path (it holds manifest.json and the model).",
        max_length=MAX_URI_LENGTH,
    )
    sha256: str = Field(
        pattern=SHA256_PATTERN,
        description="sha256 (64 lowercase hex digits) of the revision's manifest.json; the revision "
        "is served only if it matches.",
    )

    @field_validator("uri")
    @classmethod
    def _pvc_uri(cls, value: str) -> str:
        return require_pvc_uri(value)


class ModelSource(ApiModel):
    """Where the served model comes from: exactly one of trainingJob and artifact."""

    training_job: str | None = Field(
        None,
        pattern=DNS_LABEL_PATTERN,
        max_length=MAX_JOB_NAME_LENGTH,
        description="Name of a GANTrainingJob in the same namespace; its newest exported revision is served.",
    )
    artifact: ArtifactRef | None = Field(None, description="A revision exported earlier, by URI and sha256.")

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelSource:
        if (self.training_job is None) == (self.artifact is None):
            raise ValueError("set exactly one of spec.source.trainingJob and spec.source.artifact")
        return self


class ModelVolumeSpec(ApiModel):
    """The volume of Triton's own model repository in each pod: the verified revision's model
    directory is copied there before Triton starts, so Triton never reads the shared claim."""

    medium: Literal["Disk", "Memory"] = Field(
        "Disk", description="Disk: the node's ephemeral storage; Memory: tmpfs, which counts against the pod's "
        "memory (faster loads, no disk use).",
    )
    size_limit: str | None = Field(
        None, description="Largest size of the model directory (Kubernetes quantity); a pod beyond it is evicted. "
        "null = no limit.",
    )

    @field_validator("size_limit")
    @classmethod
    def _quantity(cls, value: str | None) -> str | None:
        return require_quantity(value) if value is not None else None


class TritonSpec(ApiModel):
    """The Triton pods of each revision."""

    image: str | None = Field(None, description="Triton server image; null = the operator's default Triton image.")
    replicas: int = Field(1, ge=1, le=100, description="Triton pods per revision.")
    cpu: str = Field("1", description="CPU request per Triton pod (Kubernetes quantity).")
    memory: str = Field("2Gi", description="Memory request per Triton pod (Kubernetes quantity).")
    max_batch_size: int = Field(
        64, ge=1, le=4096, description="Largest batch Triton's dynamic batcher forms (max_batch_size)."
    )
    max_queue_delay_microseconds: int = Field(
        2000,
        ge=0,
        le=1_000_000,
        description="How long the dynamic batcher holds a request to fill a batch; 0 = never waits.",
    )
    instances: int = Field(1, ge=1, le=64, description="Model instances per pod (Triton's instance_group count).")
    threads: int = Field(
        1,
        ge=1,
        le=64,
        description="Inference threads per model instance; instances x threads is the CPU a pod uses, "
        "so keep it within the pod's cpu request to avoid oversubscribing cores.",
    )
    model_volume: ModelVolumeSpec = Field(
        default_factory=ModelVolumeSpec, description="Where each pod keeps the model Triton loads.",
    )

    @field_validator("cpu", "memory")
    @classmethod
    def _quantity(cls, value: str) -> str:
        return require_quantity(value)


# Gateway API (standard channel): the route that splits a service's traffic between revisions.
GATEWAY_API_GROUP = "gateway.networking.k8s.io"
GATEWAY_API_VERSION = "v1"
HTTPROUTE_PLURAL = "httproutes"
# Hostnames as Gateway API accepts them (RFC 1123, optionally one leading wildcard label).
HOSTNAME_PATTERN = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class GatewaySpec(ApiModel):
    """The Gateway whose HTTPRoute splits the service's traffic between the stable and the canary."""

    name: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63, description="Name of the Gateway (Gateway API).")
    namespace: str | None = Field(
        None, pattern=DNS_LABEL_PATTERN, max_length=63,
        description="Namespace of the Gateway; null = the service's. Its listener must allow routes from here.",
    )
    section_name: str | None = Field(
        None, pattern=DNS_LABEL_PATTERN, max_length=63, description="The Gateway's listener; null = every listener.",
    )
    hostnames: list[Annotated[str, Field(pattern=HOSTNAME_PATTERN, max_length=253)]] = Field(
        default_factory=list, max_length=16,
        description="Hostnames the route answers; empty = any. Requests match /v2/models/<modelName> below them.",
    )
    drain_seconds: int = Field(
        10, ge=0, le=600,
        description="How long a revision whose weight went to 0 keeps running before it is removed: time for "
                    "the gateway to apply the route and for in-flight requests to finish.",
    )


class GANInferenceServiceSpec(ApiModel):
    model_name: str | None = Field(
        None,
        pattern=MODEL_NAME_PATTERN,
        description="The model name clients call in Triton (/v2/models/<modelName>); null = metadata.name. "
        "Immutable: clients depend on it.",
    )
    source: ModelSource = Field(description="The model to serve.")
    triton: TritonSpec = Field(default_factory=TritonSpec, description="Triton pods of each revision.")
    rollout: RolloutPolicy = Field(
        default_factory=RolloutPolicy,
        description="How a new revision replaces the stable one: strategy, traffic steps, gates, approval.",
    )
    gateway: GatewaySpec | None = Field(
        None,
        description="Gateway API Gateway whose HTTPRoute (named like the service) splits traffic by "
        "spec.rollout.steps; null = no weighted traffic: the canary is analysed on its own Service and the "
        "stable Service switches at promotion.",
    )


class ServiceObjectMeta(ObjectMeta):
    """The parts of Kubernetes ObjectMeta the operator reads; anything else is kept, not checked."""

    name: str | None = Field(None, max_length=MAX_SERVICE_NAME_LENGTH, pattern=DNS_1035_LABEL_PATTERN)


# `kubectl annotate gis NAME ganforge.io/promote=<revision>` promotes a paused or waiting canary;
# ganforge.io/abort=<revision> rolls it back. Naming the revision keeps a stale annotation from
# deciding a later rollout.
PROMOTE_ANNOTATION = "ganforge.io/promote"
ABORT_ANNOTATION = "ganforge.io/abort"

ServicePhase = Literal["Pending", "Progressing", "Ready", "Degraded"]
ServiceConditionType = Literal["Ready", "Progressing", "Degraded"]
RevisionState = Literal["Loading", "Ready", "Failed", "Retired"]



class ServiceCondition(ApiModel, ConditionFields):
    """A Kubernetes-style condition (metav1.Condition)."""

    model_config = STATUS_CONFIG

    type: ServiceConditionType = Field(description="Condition type.")
    observed_generation: int | None = Field(None, description="metadata.generation the condition was set for.")


class RevisionStatus(ApiModel):
    """One revision: a Triton Deployment + Service serving one exported model."""

    model_config = STATUS_CONFIG

    name: str = Field(description="Revision name: r + the first 10 hex digits of its manifest's sha256.")
    uri: str = Field(description="The revision directory (pvc://claim/path).")
    sha256: str = Field(description="sha256 of the revision's manifest.json.")
    source: str = Field(description="Where it came from, for people, e.g. GANTrainingJob fashion at 12.8 kimg.")
    state: RevisionState = Field(description="Loading, Ready (serves), Failed or Retired (no longer serves).")
    replicas: int = Field(0, ge=0, description="Triton pods of the revision.")
    ready_replicas: int = Field(0, ge=0, description="Of those, pods whose model is ready.")
    message: str = Field("", description="Explanation of the state, for people.")
    created_time: str | None = Field(None, description="RFC 3339 time the revision was created.")
    drain_until: str | None = Field(
        None, description="RFC 3339 time until which a revision that lost its traffic keeps its pods, so that "
                          "requests in flight finish; null = not draining.",
    )


RolloutPhase = Literal["Progressing", "Paused", "AwaitingApproval", "Promoted", "RolledBack"]
AnalysisState = Literal["Running", "Pass", "Fail", "Inconclusive"]
# Analyses kept in a rollout's status (newest last).
MAX_ANALYSES_IN_STATUS = 12


class AnalysisRecord(ApiModel):
    """One analysis of the canary: a pod running `ganforge analyze`, and what it measured."""

    model_config = STATUS_CONFIG

    step: int = Field(ge=0, description="Index of the rollout step it analysed.")
    attempt: int = Field(ge=0, description="Re-runs of this step before it (after a tolerated failure).")
    weight: int = Field(ge=0, le=100, description="Percentage of user traffic the canary had meanwhile.")
    pod: str = Field(description="The analysis pod.")
    state: AnalysisState = Field(description="Running, or its verdict: Pass, Fail or Inconclusive.")
    feature_extractor: str | None = Field(None, description="Feature space of the quality measurements.")
    sample_size: int = Field(0, ge=0, description="Images generated from each revision.")
    measurements: list[Measurement] = Field(default_factory=list, description="Each measurement and its verdict.")
    message: str = Field("", description="Summary, for people.")
    started_time: str | None = Field(None, description="RFC 3339 time the analysis pod was created.")
    finished_time: str | None = Field(None, description="RFC 3339 time its verdict was recorded.")


class RolloutStatus(ApiModel):
    """The latest rollout of a new revision against the stable one."""

    model_config = STATUS_CONFIG

    revision: str = Field(description="The canary revision.")
    from_revision: str = Field(description="The stable revision when the rollout began.")
    strategy: Literal["canary", "blueGreen"] = Field(description="Strategy the rollout runs.")
    phase: RolloutPhase = Field(description="Progressing, Paused (inconclusive), AwaitingApproval, Promoted "
                                            "or RolledBack.")
    step: int = Field(0, ge=0, description="Index of the current step.")
    weights: list[int] = Field(default_factory=list, description="Canary traffic percentage of each step.")
    failures: int = Field(0, ge=0, description="Failed analyses so far.")
    inconclusives: int = Field(0, ge=0, description="Inconclusive analyses so far.")
    analyses: list[AnalysisRecord] = Field(default_factory=list, description="The analyses, newest last.")
    message: str = Field("", description="Explanation of the phase, for people.")
    started_time: str | None = Field(None, description="RFC 3339 time the rollout began.")
    finished_time: str | None = Field(None, description="RFC 3339 time it was promoted or rolled back.")


class GANInferenceServiceStatus(ApiModel):
    model_config = STATUS_CONFIG

    observed_generation: int | None = Field(None, description="metadata.generation the operator last acted on.")
    phase: ServicePhase = Field("Pending", description="Lifecycle phase.")
    model_name: str | None = Field(None, description="The model name clients call (spec.modelName or metadata.name).")
    stable_revision: str | None = Field(None, description="The revision the stable Service sends traffic to.")
    canary_revision: str | None = Field(None, description="The revision under rollout; null = none.")
    canary_weight: int = Field(0, ge=0, le=100, description="Percentage of traffic sent to the canary.")
    endpoint: str | None = Field(
        None,
        description="In-cluster URL of the stable Service, "
        f"e.g. http://<name>.<namespace>.svc:{TRITON_HTTP_PORT}.",
    )
    route: str | None = Field(
        None, description="With spec.gateway: the HTTPRoute (named like the service) and whether the Gateway "
                          "accepted it, for people.",
    )
    revisions: list[RevisionStatus] = Field(default_factory=list, description="Revisions that exist.")
    rollout: RolloutStatus | None = Field(None, description="The current or latest rollout.")
    conditions: list[ServiceCondition] = Field(default_factory=list, description="Kubernetes-style conditions.")


class GANInferenceService(ApiModel):
    api_version: Literal["ganforge.io/v1alpha1"] = Field("ganforge.io/v1alpha1", description="API version.")
    kind: Literal["GANInferenceService"] = Field("GANInferenceService", description="Kind.")
    metadata: ServiceObjectMeta = Field(default_factory=ServiceObjectMeta, description="Kubernetes object metadata.")
    spec: GANInferenceServiceSpec = Field(description="Desired service.")
    status: GANInferenceServiceStatus | None = Field(None, description="Observed state (written by the operator).")
