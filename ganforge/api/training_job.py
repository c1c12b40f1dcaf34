"""`GANTrainingJob`: the one source of truth for the job spec.

The trainer validates its config file with these models and the CRD's OpenAPI schema is generated
from them, so types stay simple (str/int/float/bool/Literal/lists/nested models) and every field
carries a description. Field names are snake_case in Python and camelCase on the wire.
"""

from __future__ import annotations

import itertools
import re
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

from ganforge.api.conditions import ConditionFields
from ganforge.api.storage import job_checkpoint_claim, parse_pvc_uri

API_GROUP = "ganforge.io"
VERSION = "v1alpha1"
API_VERSION = f"{API_GROUP}/{VERSION}"
KIND = "GANTrainingJob"
PLURAL = "gantrainingjobs"

QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
# A DNS-1123 label: what Kubernetes allows as the name of a Service (and of most objects).
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# What a Service name must be (RFC 1035 label). Jobs and inference services lend their names to
# Services, so their names must be one too: a dot or a leading digit would make every Service
# create fail long after `kubectl apply` accepted the object.
DNS_1035_LABEL_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"

# The operator derives pod and service names (with suffixes) from the job name, which must stay
# within the 63-character label limit.
MAX_JOB_NAME_LENGTH = 40
# Longest accepted URI; bounded so the apiserver can cost its CEL rules (PATH_MAX on Linux).
MAX_URI_LENGTH = 4096

# URI grammar, shared with the CRD's CEL rules: written for both Python `re` and RE2, hence `[.]`
# rather than an escaped dot (CEL string literals would need the backslash escaped again).
_CLAIM = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_PVC_URI = rf"pvc://{_CLAIM}(/.*)?"
PVC_URI_PATTERN = rf"^{_PVC_URI}$"
LOCAL_URI_PATTERN = rf"^(/.*|file:///.*|{_PVC_URI})$"
FAKE_URI_PATTERN = r"^fake://.*$"
FSSPEC_URI_PATTERN = r"^[a-zA-Z][a-zA-Z0-9+.-]*://.+$"
# Schemes with a meaning of their own: a malformed pvc:// or file:// URI is not left to fsspec.
RESERVED_SCHEME_PATTERN = r"^(pvc|file)://"
DATASET_URI_FORMS = "an absolute path, file:///path, pvc://claim/path or fake://name"
CHECKPOINT_URI_FORMS = "an absolute path, file:///path, pvc://claim/path or another scheme://... (fsspec)"


def _matches(pattern: str, value: str) -> bool:
    return re.fullmatch(pattern, value) is not None


def require_pvc_uri(uri: str) -> str:
    if not _matches(PVC_URI_PATTERN, uri):
        raise ValueError(f"must be a pvc://claim/path URI, got {uri!r}")
    return uri


def require_quantity(value: str) -> str:
    if not _matches(QUANTITY_PATTERN, value):  # whole string: `$` alone accepts a trailing newline
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    return value


def dataset_uri_ok(uri: str) -> bool:
    return _matches(LOCAL_URI_PATTERN, uri) or _matches(FAKE_URI_PATTERN, uri)


def checkpoint_uri_ok(uri: str) -> bool:
    if _matches(LOCAL_URI_PATTERN, uri):
        return True
    return _matches(FSSPEC_URI_PATTERN, uri) and re.match(RESERVED_SCHEME_PATTERN, uri) is None


class ApiModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON/YAML form: camelCase keys, enums as strings."""
        return self.model_dump(by_alias=True, mode="json")


# Status is written by the operator and read back by it: a field that a newer operator added must
# not stop an older one from parsing the rest, so status models ignore unknown fields.
STATUS_CONFIG = ConfigDict(extra="ignore")


DatasetFormat = Literal["idx", "image-folder", "npz", "fake"]
ResizeMode = Literal["pad", "interpolate"]
Architecture = Literal["dcgan", "sngan-resnet"]
LossKind = Literal["nonsaturating", "hinge", "wgan-gp"]
Precision = Literal["fp32", "bf16", "fp16"]
AugmentOp = Literal["color", "translation", "cutout"]
MetricName = Literal["fd", "kid", "precision_recall", "mode_collapse", "memorization", "label_adherence"]
FeatureExtractorName = Literal["effnetlite0", "domain", "torchscript"]


class DatasetSpec(ApiModel):
    uri: str = Field(
        description="Where the data lives: a plain path, file:///path, pvc://claim/path (mapped to the "
        "claim's mount by the operator) or fake://name?n=1024&classes=10 for smoke tests.",
        min_length=1,
        max_length=MAX_URI_LENGTH,
    )
    format: DatasetFormat = Field(
        "idx",
        description="idx: a directory with (t10k|train)-(images-idx3|labels-idx1)-ubyte[.gz] files; "
        "image-folder: one sub-directory per class; npz: arrays `images` and optional `labels`; "
        "fake: synthetic shapes for smoke tests only.",
    )
    resolution: int = Field(32, ge=8, le=1024, description="Square training resolution; a power of two.")
    channels: Literal[1, 3] = Field(1, description="Image channels (1 grayscale, 3 RGB).")
    resize: ResizeMode = Field(
        "pad",
        description="How images reach `resolution`: pad (centred zero padding; only when the source "
        "is not larger, e.g. 28->32 keeps every pixel) or interpolate (centre-crop to square, then "
        "antialiased bilinear resampling).",
    )
    conditional: bool = Field(False, description="Train a class-conditional model on the labels.")
    num_classes: int | None = Field(
        None, ge=2, le=10000, description="Number of classes; inferred from the labels when omitted."
    )

    @field_validator("resolution")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError(f"must be a power of two, got {value}")
        return value

    @field_validator("uri")
    @classmethod
    def _uri_form(cls, value: str) -> str:
        if not dataset_uri_ok(value):
            raise ValueError(f"must be {DATASET_URI_FORMS}, got {value!r}")
        return value


class RegularizationSpec(ApiModel):
    spectral_norm: bool | None = Field(
        None,
        description="Spectral normalisation on every discriminator layer (replaces its BatchNorm); "
        "null = the architecture's default (off for dcgan, on for sngan-resnet).",
    )
    r1_gamma: float = Field(0.0, ge=0.0, le=1000.0, description="R1 penalty weight on real images; 0 = off.")
    r1_interval: int = Field(
        1, ge=1, le=64,
        description="Lazy R1 (StyleGAN2): the penalty every r1Interval discriminator steps, scaled by "
        "r1Interval, in its own pass over the reals; 1 = every step.",
    )
    gp_lambda: float = Field(10.0, ge=0.0, le=1000.0, description="Gradient-penalty weight for wgan-gp.")


class EmaSpec(ApiModel):
    half_life_kimg: float = Field(
        10.0, ge=0.0, le=10000.0, description="Half-life of the generator EMA in thousands of images; 0 = off."
    )
    rampup: float | None = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="Early in training the half-life is at most `rampup` x images seen, so the EMA does "
        "not lag behind a fast-moving generator; null disables the ramp-up.",
    )


class ModelSpec(ApiModel):
    architecture: Architecture = Field("dcgan", description="Generator/discriminator family.")
    latent_dim: int = Field(128, ge=1, le=4096, description="Size of the latent vector z.")
    width: int = Field(
        64, ge=4, le=1024, description="Channel width of the highest-resolution layer (DCGAN's ngf/ndf)."
    )
    loss: LossKind = Field("nonsaturating", description="Adversarial loss.")
    regularization: RegularizationSpec = Field(
        default_factory=RegularizationSpec, description="Discriminator regularisation."
    )
    ema: EmaSpec = Field(default_factory=EmaSpec, description="Exponential moving average of G.")


class OptimizerSpec(ApiModel):
    g_lr: float = Field(2e-4, gt=0.0, le=1.0, description="Generator Adam learning rate (TTUR: may differ).")
    d_lr: float = Field(2e-4, gt=0.0, le=1.0, description="Discriminator Adam learning rate.")
    betas: list[Annotated[float, Field(ge=0.0, lt=1.0)]] = Field(
        default_factory=lambda: [0.5, 0.999], min_length=2, max_length=2, description="Adam betas."
    )
    eps: float = Field(1e-8, gt=0.0, le=1.0, description="Adam epsilon.")


class AdaptiveAugmentSpec(ApiModel):
    """StyleGAN2-ADA's control of the augmentation probability p: D's outputs on real images tell
    how far it overfits (r = the mean sign of its real logits: 0 when it cannot tell real from
    fake, 1 when it has memorised every real image), and p moves towards the value that holds r at
    `target` (up when above it, down when below)."""

    target: float = Field(0.6, gt=0, lt=1, description="The overfitting heuristic r to hold (ADA: 0.6).")
    speed_kimg: float = Field(
        500.0, gt=0, le=100000, description="kimg over which p can travel from 0 to 1 (ADA: 500)."
    )


class AugmentSpec(ApiModel):
    """What D sees of every image, real and generated (DiffAugment, Zhao et al. 2020): the
    discriminator cannot memorise a small dataset, and G is trained through the same
    differentiable transforms, so they do not leak into its samples."""

    policy: list[AugmentOp] = Field(
        default_factory=list,
        description="Differentiable transforms, in order: color (brightness, saturation, contrast), "
        "translation (up to 1/8 of the image), cutout (a square of half the image); empty = none.",
        max_length=3,
    )

    @field_validator("policy")
    @classmethod
    def _each_once(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"each transform at most once, got {value}")
        return value
    xflip: bool = Field(
        False, description="Mirror each image D sees with probability 1/2. Only for data whose mirror images "
        "are real images (not text, not Fashion-MNIST, whose shoes all face one way): a flip of half of what "
        "D sees lets G's samples come out mirrored.",
    )
    probability: float | None = Field(
        None, ge=0, le=1,
        description="Chance that each transform of the policy is applied to an image; with adaptive, "
        "its value at the start of training. Unset: 1, or 0 with adaptive (as ADA starts).",
    )
    adaptive: AdaptiveAugmentSpec | None = Field(
        None, description="Adjust the probability during training from how far D overfits (ADA); "
        "needs a policy, and a loss whose D outputs logits (not wgan-gp).",
    )

    @property
    def initial_probability(self) -> float:
        """p at the start of training: the spec's, else always, or never with adaptive (as ADA starts)."""
        if self.probability is not None:
            return self.probability
        return 0.0 if self.adaptive is not None else 1.0


ADAPTIVE_AUGMENT_NEEDS_POLICY = "training.augment.adaptive needs transforms to apply: set training.augment.policy"
# ADA reads overfitting from the sign of D's real logits; a WGAN critic's output has no meaningful sign.
ADAPTIVE_AUGMENT_NEEDS_LOGITS = "training.augment.adaptive needs logits from D: not with model.loss wgan-gp"

# torch.compile with channels_last fails in the first backward on CUDA: inductor's compiled
# convolution_backward expects channels_last strides for the weight gradient of G's first transposed
# convolution (a 1x1 input) and cuDNN returns contiguous ones (seen with torch 2.11 on an H200; CPUs
# are unaffected). Rejected at apply rather than crashing every restart of the job.
COMPILE_CHANNELS_LAST_ON_GPU = (
    "training.channelsLast with training.compile is not supported on GPUs (resources.gpusPerWorker > 0): "
    "torch.compile's backward of the generator's first transposed convolution fails in channels_last on "
    "CUDA; turn one of them off"
)


class TrainingSpec(ApiModel):
    total_kimg: float = Field(200.0, gt=0.0, le=1e7, description="Stop after this many thousand real images.")
    batch_size: int = Field(64, ge=1, le=65536, description="Global batch size (all workers together).")
    d_steps_per_g: int = Field(1, ge=1, le=16, description="Discriminator updates per generator update.")
    precision: Precision = Field(
        "fp32", description="Autocast precision; fp16 adds a GradScaler per network."
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Base seed; each rank derives its own.")
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec, description="Adam settings.")
    channels_last: bool = Field(
        False, description="Use the channels_last memory format: faster convolutions with oneDNN on CPUs. "
        "Not with compile on GPUs."
    )
    compile: bool = Field(
        False, description="Wrap G and D in torch.compile (penalties on D's gradient run through the eager D)."
    )
    augment: AugmentSpec = Field(
        default_factory=AugmentSpec, description="Augmentation of D's inputs, for small datasets."
    )
    deterministic: bool = Field(
        False, description="Deterministic kernels only (torch.use_deterministic_algorithms, no cuDNN "
        "autotuning): a rerun on the same hardware gives the same bits, at some speed on GPUs.",
    )
    report_interval_kimg: float = Field(
        1.0, gt=0.0, le=1e6, description="Log/metrics/progress cadence in thousand images."
    )
    sample_interval_kimg: float = Field(
        10.0, ge=0.0, le=1e6, description="Sample-grid cadence in thousand images; 0 = only at the end."
    )


class ResourcesSpec(ApiModel):
    workers: int = Field(1, ge=1, le=1024, description="Number of trainer pods.")
    gpus_per_worker: int = Field(1, ge=0, le=16, description="GPUs per pod; 0 trains on CPU.")
    processes_per_worker: int | None = Field(
        None, ge=1, le=64,
        description="Training processes (ranks) per pod; null = one per GPU (gpusPerWorker), or 1 on CPU. "
        "With GPUs it must equal gpusPerWorker. Ranks = workers x processes.",
    )
    cpu: str = Field("4", description="CPU request per worker (Kubernetes quantity).")
    memory: str = Field("16Gi", description="Memory request and limit per worker (Kubernetes quantity); a worker "
                        "over it is OOM-killed, a failure.")
    spot: bool = Field(True, description="Schedule on spot/preemptible nodes.")

    @property
    def processes(self) -> int:
        if self.processes_per_worker is not None:
            return self.processes_per_worker
        return self.gpus_per_worker or 1

    @property
    def world_size(self) -> int:
        """Ranks in a gang: every process of every worker pod."""
        return self.workers * self.processes

    @model_validator(mode="after")
    def _one_process_per_gpu(self) -> ResourcesSpec:
        if self.gpus_per_worker and self.processes_per_worker not in (None, self.gpus_per_worker):
            raise ValueError(
                f"resources.processesPerWorker ({self.processes_per_worker}) must equal resources.gpusPerWorker "
                f"({self.gpus_per_worker}): one process per GPU"
            )
        return self

    @field_validator("cpu", "memory")
    @classmethod
    def _quantity(cls, value: str) -> str:
        return require_quantity(value)


class CheckpointSpec(ApiModel):
    uri: str | None = Field(
        None,
        description="Checkpoint directory: path, file://, pvc://claim/path or any fsspec URI; "
        "default <runDir>/checkpoints.",
        max_length=MAX_URI_LENGTH,
    )
    interval_kimg: float = Field(10.0, gt=0.0, le=1e6, description="Periodic checkpoint cadence.")
    keep_last: int = Field(3, ge=1, le=1000, description="How many verified checkpoints to keep.")
    background: bool = Field(
        True, description="Serialise and write in a background thread (training stalls only for the copy)."
    )
    retain: bool = Field(
        True,
        description="Keep the checkpoint claim the operator created (<name>-checkpoints) when the job is "
        "deleted: the only copy of the trained model. A job applied again under the same name resumes from "
        "it. false: the claim is deleted with the job.",
    )

    @field_validator("uri")
    @classmethod
    def _uri_form(cls, value: str | None) -> str | None:
        if value is not None and not checkpoint_uri_ok(value):
            raise ValueError(f"must be {CHECKPOINT_URI_FORMS}, got {value!r}")
        return value


class CustomExtractorSpec(ApiModel):
    path: str = Field(description="TorchScript file mapping float [N,3,R,R] in [0,1] to features [N,D].")
    name: str = Field(
        "custom",
        pattern=r"^[a-z][a-z0-9_]{0,31}$",
        description="Metric suffix, e.g. `inception` gives fd_inception.",
    )
    resolution: int = Field(299, ge=16, le=1024, description="Input resolution the extractor expects.")


class EvaluationSpec(ApiModel):
    interval_kimg: float = Field(
        20.0, ge=0.0, le=1e6, description="Evaluation cadence; 0 = only at start and end."
    )
    num_samples: int = Field(10000, ge=64, le=200000, description="Generated (and reference) images used.")
    metrics: list[MetricName] = Field(
        default_factory=lambda: list(get_args(MetricName)),
        description="Metrics to compute.",
    )
    feature_extractors: list[FeatureExtractorName] = Field(
        default_factory=lambda: list[FeatureExtractorName](["effnetlite0", "domain"]),
        description="Feature spaces; each metric is reported once per extractor (fd_effnetlite0, fd_domain).",
    )
    effnet_resolution: int = Field(
        224, ge=32, le=512, description="Input resolution of EfficientNet-Lite0 (ImageNet-trained at 224)."
    )
    custom_extractor: CustomExtractorSpec | None = Field(
        None, description="User-supplied TorchScript extractor (e.g. Inception weights)."
    )
    at_start: bool = Field(True, description="Also evaluate the untrained generator (a baseline).")
    memorization_train_images: int | None = Field(
        None, ge=100, le=100_000_000,
        description="Training images the memorisation signal searches for each sample's nearest neighbour "
        "(a seeded subset); null = the whole training set. Their features are computed once per dataset and "
        "cached; with EfficientNet on a CPU that is slow for large datasets.",
    )

    @model_validator(mode="after")
    def _extractor_config(self) -> EvaluationSpec:
        if "torchscript" in self.feature_extractors and self.custom_extractor is None:
            raise ValueError("featureExtractors contains torchscript but customExtractor is not set")
        return self


DEFAULT_MODEL_REPOSITORY = "pvc://ganforge-models"
# The canary quality gate's defaults, calibrated by A/A runs (docs/canary.md).
MIN_GATE_SAMPLES = 200
DEFAULT_KID_MARGIN = 0.1


class ExportSpec(ApiModel):
    enabled: bool = Field(
        True, description="After training, export the EMA generator to ONNX (the job goes Exporting, then Succeeded)."
    )
    onnx_opset: int = Field(
        17, ge=15, le=22,
        description="ONNX opset of the exported generator. 15 is the earliest every architecture converts to "
        "(SNGAN's BatchNormalization has no earlier form in the ONNX converter).",
    )
    precision: Literal["fp32", "fp16"] = Field(
        "fp32", description="Precision of the exported generator; fp16 keeps float32 inputs and outputs."
    )
    model_repository: str = Field(
        DEFAULT_MODEL_REPOSITORY,
        max_length=MAX_URI_LENGTH,
        description="Model repository: pvc://claim[/path]. The claim is created if missing and owned by no job, "
        "so deleting a job never deletes a served model; revisions go to <repository>/<job name>/r<sha256[:10]>.",
    )

    @field_validator("model_repository")
    @classmethod
    def _pvc_uri(cls, value: str) -> str:
        return require_pvc_uri(value)


class QualityGate(ApiModel):
    """The canary's generative quality against the stable's, on samples from the same latents."""

    sample_size: int = Field(
        1000, ge=MIN_GATE_SAMPLES, le=20000,
        description=f"Images generated from each revision; KID's interval needs at least {MIN_GATE_SAMPLES}.",
    )
    kid_margin: float = Field(
        DEFAULT_KID_MARGIN, ge=0.0, le=10.0,
        description="Allowed relative KID increase of the canary over the stable (0.1 = 10 %): pass when the "
                    "interval's upper end is at most this, fail when its lower end exceeds it, else inconclusive.",
    )
    confidence: float = Field(0.95, ge=0.5, le=0.999, description="Coverage of the bootstrap interval on ΔKID.")
    bootstrap_resamples: int = Field(500, ge=100, le=10000, description="Bootstrap draws for the interval.")
    feature_extractor: FeatureExtractorName | None = Field(
        None, description="Feature space of the gate; null = domain if the artifact has it, else its first.",
    )
    max_kid: float | None = Field(None, ge=0.0, description="Absolute KID ceiling for the canary; null = none.")
    max_fd: float | None = Field(None, ge=0.0, description="Absolute FD ceiling for the canary; null = none.")
    max_fd_regression: float | None = Field(
        None, ge=0.0, le=10.0, description="Allowed relative FD increase over stable at equal N; null = none.",
    )
    min_precision: float | None = Field(None, ge=0.0, le=1.0, description="Precision floor; null = none.")
    min_recall: float | None = Field(None, ge=0.0, le=1.0, description="Recall floor; null = none.")
    min_diversity_ratio: float = Field(
        0.5, ge=0.0, le=1.0,
        description="Collapse check: the canary's sample diversity over the stable's must be at least this.",
    )


class ServingGate(ApiModel):
    """A bounded load run against the canary revision alone."""

    duration_seconds: int = Field(10, ge=1, le=600, description="Length of the load run.")
    concurrency: int = Field(2, ge=1, le=64, description="Concurrent clients.")
    batch_size: int = Field(1, ge=1, le=4096, description="Images per request.")
    p95_latency_ms: float = Field(100.0, gt=0.0, description="p95 latency ceiling in milliseconds.")
    max_error_rate: float = Field(0.0, ge=0.0, le=1.0, description="Share of failed requests allowed.")


class RolloutGates(ApiModel):
    quality: QualityGate = Field(default_factory=QualityGate, description="Generative quality gate.")
    serving: ServingGate = Field(default_factory=ServingGate, description="Latency and error gate.")


class RolloutPolicy(ApiModel):
    """How a new model revision reaches traffic; shared by the job's rollout and GANInferenceService."""

    strategy: Literal["canary", "blueGreen"] = Field("canary", description="Rollout strategy.")
    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        default_factory=lambda: [10, 50, 100],
        min_length=1,
        # Strictly increasing percentages: never more than 100 of them.
        max_length=100,
        description="Canary traffic percentages.",
    )
    gates: RolloutGates = Field(default_factory=RolloutGates, description="Promotion gates.")
    approval: Literal["auto", "manual"] = Field(
        "auto", description="auto: promote when every step passes; manual: wait for a person at the end.")
    failure_limit: int = Field(
        0, ge=0, le=10, description="Failed analyses tolerated (each re-run) before the rollout aborts.")
    inconclusive_limit: int = Field(
        0, ge=0, le=10, description="Inconclusive analyses tolerated (each re-run) before the rollout pauses.")

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[int]) -> list[int]:
        if any(b <= a for a, b in itertools.pairwise(steps)) or steps[-1] != 100:
            raise ValueError(f"must increase strictly and end at 100, got {steps}")
        return steps


def _service_first(schema: JsonDict) -> None:
    # `service` stays the first property, where it stood before RolloutPolicy was factored out:
    # the generated GANTrainingJob CRD does not change.
    properties = schema["properties"]
    assert isinstance(properties, dict)
    schema["properties"] = {"service": properties.pop("service"), **properties}


class RolloutSpec(RolloutPolicy):
    model_config = ConfigDict(json_schema_extra=_service_first)

    service: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63, description="GANInferenceService name.")


class GANTrainingJobSpec(ApiModel):
    dataset: DatasetSpec = Field(description="Training data.")
    model: ModelSpec = Field(default_factory=ModelSpec, description="Architecture and loss.")
    training: TrainingSpec = Field(default_factory=TrainingSpec, description="Optimisation schedule.")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="Pods and devices.")
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec, description="Checkpointing.")
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec, description="Quality metrics.")
    export: ExportSpec = Field(default_factory=ExportSpec, description="ONNX export of G_ema.")
    rollout: RolloutSpec | None = Field(None, description="Serving rollout after training.")
    backoff_limit: int = Field(
        3, ge=0, le=100, description="User-code failures tolerated; preemptions never count."
    )
    suspend: bool = Field(
        False,
        description="Stop the gang (each rank writes its emergency checkpoint on SIGTERM) and keep the job; "
        "false again resumes from the newest checkpoint. Counted neither as a failure nor as a preemption; "
        "the activeDeadlineSeconds clock restarts on resume.",
    )
    active_deadline_seconds: int | None = Field(
        None, ge=1,
        description="Training time allowed since the first gang started (or the last resume); past it the job "
        "fails with reason DeadlineExceeded.",
    )
    launch_timeout_seconds: int | None = Field(
        None, ge=1,
        description="How long a gang may wait for all its pods to run (unschedulable, pulling images) before "
        "the job fails with reason GangNotRunning; unset: it waits as long as it takes.",
    )
    ttl_seconds_after_finished: int | None = Field(
        None, ge=0,
        description="Delete the ended job's pods (and with them their logs) this long after it Succeeded or "
        "Failed; the job, its checkpoint claim and its exported model stay.",
    )
    max_preemptions: int = Field(
        100, ge=0, le=10000,
        description="Disruptions tolerated (preemptions, evictions, lost nodes, pods refused at admission) "
        "before the job fails; they never count against backoffLimit.",
    )

    @model_validator(mode="after")
    def _cross_field(self) -> GANTrainingJobSpec:
        ranks = self.resources.world_size
        if self.training.batch_size % ranks:
            raise ValueError(
                f"training.batchSize ({self.training.batch_size}) must be divisible by the number of ranks, "
                f"resources.workers x processes per worker ({ranks})"
            )
        if self.model.loss == "wgan-gp" and self.model.regularization.gp_lambda <= 0:
            raise ValueError("model.regularization.gpLambda must be > 0 when model.loss is wgan-gp")
        if self.training.compile and self.training.channels_last and self.resources.gpus_per_worker > 0:
            raise ValueError(COMPILE_CHANNELS_LAST_ON_GPU)
        if self.training.augment.adaptive is not None:
            if not self.training.augment.policy:
                raise ValueError(ADAPTIVE_AUGMENT_NEEDS_POLICY)
            if self.model.loss == "wgan-gp":
                raise ValueError(ADAPTIVE_AUGMENT_NEEDS_LOGITS)
        if self.dataset.resolution < 16 and self.model.architecture == "sngan-resnet":
            raise ValueError("dataset.resolution must be >= 16 for model.architecture sngan-resnet")
        for metric in ("mode_collapse", "label_adherence"):
            if metric in self.evaluation.metrics and "domain" not in self.evaluation.feature_extractors:
                raise ValueError(
                    f"evaluation.metrics {metric} needs the domain classifier in evaluation.featureExtractors"
                )
        return self


class ObjectMeta(BaseModel):
    """The parts of Kubernetes ObjectMeta the trainer reads; anything else is kept, not checked."""

    model_config = ConfigDict(extra="allow")
    name: str | None = Field(None, max_length=MAX_JOB_NAME_LENGTH, pattern=DNS_1035_LABEL_PATTERN)
    namespace: str | None = None


Phase = Literal["Pending", "Running", "Restarting", "Suspended", "Exporting", "RollingOut", "Succeeded", "Failed"]
ConditionType = Literal["Created", "Running", "Restarting", "Suspended", "SpecApplied", "Exported", "RolledOut",
                        "Succeeded", "Failed"]


class TrainingProgress(ApiModel):
    model_config = STATUS_CONFIG

    kimg: float = Field(0.0, description="Thousands of real images shown to D.")
    step: int = Field(0, description="Generator updates so far.")
    images_per_second: float = Field(0.0, description="Recent training throughput (all ranks).")
    total_kimg: float | None = Field(None, description="Where training stops (spec.training.totalKimg).")
    resumed_from_kimg: float | None = Field(
        None, description="Progress of the checkpoint the current gang resumed from; null = started fresh."
    )
    resumed_from_step: int | None = Field(None, description="Generator step of that checkpoint.")


class CheckpointStatus(ApiModel):
    model_config = STATUS_CONFIG

    uri: str = Field(description="Directory of the newest verified checkpoint.")
    kimg: float = Field(description="Progress it captures.")
    step: int | None = Field(None, description="Generator step it captures.")
    sha256: str = Field(description="sha256 of its manifest.")
    time: str = Field(description="RFC 3339 time it was written.")


class ArtifactStatus(ApiModel):
    """The exported model: what `ganforge export` reports and a GANInferenceService serves."""

    uri: str = Field(description="The revision directory in the model repository (pvc://claim/path/r...).")
    sha256: str = Field(description="sha256 of the revision's manifest.json: the revision's identity.")
    revision: str = Field(description="Revision name: r + the first 10 hex digits of sha256.")
    kimg: float | None = Field(None, description="Training progress of the exported checkpoint.")
    checkpoint_sha256: str | None = Field(None, description="sha256 of the exported checkpoint's manifest.")
    parity_max_abs_diff: float | None = Field(
        None, description="Largest |ONNX Runtime - PyTorch| pixel difference on the parity latents."
    )


class Condition(ApiModel, ConditionFields):
    """A Kubernetes-style condition (metav1.Condition without observedGeneration)."""

    model_config = STATUS_CONFIG

    type: ConditionType = Field(description="Condition type.")


class WorkersStatus(ApiModel):
    model_config = STATUS_CONFIG

    ready: int = Field(0, ge=0, description="Worker pods running (and ready).")
    total: int = Field(0, ge=0, description="Worker pods in the gang (spec.resources.workers).")


class FailureStatus(ApiModel):
    model_config = STATUS_CONFIG

    reason: str = Field(description="Why the gang stopped, e.g. DataError or UserCodeFailed.")
    message: str = Field("", description="The trainer's last log lines (termination message).")
    exit_code: int | None = Field(None, description="Exit code of the first failed worker.")
    rank: int | None = Field(None, description="Rank of that worker.")
    disruption: bool = Field(
        False, description="True when the infrastructure ended the gang (it did not count against backoffLimit)."
    )
    time: str = Field(description="RFC 3339 time the failure was observed.")


class JobRolloutStatus(ApiModel):
    """Where the job's exported revision stands in its GANInferenceService (spec.rollout)."""

    model_config = STATUS_CONFIG


    model_config = STATUS_CONFIG


    service: str = Field(description="The GANInferenceService.")
    revision: str = Field(description="The job's revision.")
    phase: Literal["Waiting", "Progressing", "Paused", "AwaitingApproval", "Promoted", "RolledBack"] = Field(
        description="Waiting until the service picks the revision up, then the service's rollout phase.")
    message: str = Field("", description="Explanation, for people.")


class GANTrainingJobStatus(ApiModel):
    model_config = STATUS_CONFIG

    phase: Phase = Field("Pending", description="Lifecycle phase.")
    conditions: list[Condition] = Field(default_factory=list, description="Kubernetes-style conditions.")
    observed_generation: int | None = Field(
        None, description="metadata.generation the operator last acted on. The operator's own fields apply at "
        "once; whether the running gang has the rest says the SpecApplied condition."
    )
    launched_generation: int | None = Field(
        None, description="metadata.generation the current gang was started from."
    )
    gang: int = Field(0, ge=0, description="Index of the current gang of worker pods; each restart adds one.")
    launched_gang: int | None = Field(
        None, description="Index of the newest gang whose pods were all created; a pod of it that goes "
        "missing afterwards was disrupted."
    )
    workers: WorkersStatus | None = Field(None, description="Worker pods of the current gang.")
    progress: TrainingProgress | None = Field(None, description="Training progress (reported by rank 0).")
    checkpoint: CheckpointStatus | None = Field(None, description="Newest checkpoint (reported by rank 0).")
    preemptions: int = Field(0, ge=0, description="Preemptions survived; they never count against backoffLimit.")
    failures: int = Field(0, ge=0, description="User-code failures counted against backoffLimit.")
    last_failure: FailureStatus | None = Field(None, description="The most recent failure or disruption.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Newest evaluation metrics.")
    artifact: ArtifactStatus | None = Field(None, description="The exported model (spec.export).")
    export_attempts: int = Field(0, ge=0, description="Export pods started; an interrupted export is retried.")
    rollout: JobRolloutStatus | None = Field(None, description="The exported revision's rollout (spec.rollout).")
    start_time: str | None = Field(None, description="RFC 3339 time the first gang was created.")
    gang_launch_time: str | None = Field(None, description="RFC 3339 time the current gang's pods were created.")
    completion_time: str | None = Field(None, description="RFC 3339 time the job Succeeded or Failed.")


MODEL_REPOSITORY_ON_CHECKPOINT_CLAIM = (
    "spec.export.modelRepository must not be on the job's checkpoint claim (spec.checkpoint.uri, or "
    "<name>-checkpoints without it): served revisions would go when that claim does"
)


def checkpoint_claim_of(job_name: str | None, spec: GANTrainingJobSpec) -> str | None:
    """The claim holding a job's checkpoints; None when they are not on a claim (or, without
    spec.checkpoint.uri, when the job's name is not known yet)."""
    if spec.checkpoint.uri is None:
        return job_checkpoint_claim(job_name) if job_name else None
    return parse_pvc_uri(spec.checkpoint.uri).claim if spec.checkpoint.uri.startswith("pvc://") else None


class GANTrainingJob(ApiModel):
    api_version: Literal["ganforge.io/v1alpha1"] = Field("ganforge.io/v1alpha1", description="API version.")
    kind: Literal["GANTrainingJob"] = Field("GANTrainingJob", description="Kind.")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta, description="Kubernetes object metadata.")
    spec: GANTrainingJobSpec = Field(description="Desired training job.")
    status: GANTrainingJobStatus | None = Field(None, description="Observed state (written by the operator).")

    @model_validator(mode="after")
    def _model_repository_apart(self) -> GANTrainingJob:
        # A claim the operator made for the checkpoints is deleted with the job when
        # spec.checkpoint.retain is false; a model repository must outlive every job.
        checkpoints = checkpoint_claim_of(self.metadata.name, self.spec)
        if checkpoints is not None and parse_pvc_uri(self.spec.export.model_repository).claim == checkpoints:
            raise ValueError(MODEL_REPOSITORY_ON_CHECKPOINT_CLAIM)
        return self
