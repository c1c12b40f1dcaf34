"""How the operator places and sizes what it creates: one typed object, read from a YAML file
(the operator's ConfigMap) and overridable per field from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from ganforge.api.inference_service import TritonProfile


class Toleration(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str
    operator: str = "Exists"
    value: str | None = None
    effect: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class OperatorSettings(BaseModel):
    # camelCase in the YAML file, like every other Kubernetes-facing configuration.
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)

    trainer_image: str = Field("ganforge/trainer:dev", description="Image whose PATH has `ganforge`.")
    spot_node_selector: dict[str, str] = Field(
        default_factory=lambda: {"node.ganforge.io/capacity-type": "spot"},
        description="Node labels that select spot/preemptible nodes (spec.resources.spot: true).",
    )
    spot_tolerations: list[Toleration] = Field(
        default_factory=lambda: [Toleration(key="node.ganforge.io/spot", effect="NoSchedule")],
        description="Taints of spot nodes that trainer pods tolerate.",
    )
    on_demand_node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels for spec.resources.spot: false."
    )
    checkpoint_storage_class: str | None = Field(None, description="StorageClass of created checkpoint claims.")
    checkpoint_volume_size: str = Field("10Gi", description="Size of created checkpoint claims.")
    checkpoint_access_modes: list[str] = Field(
        default_factory=lambda: ["ReadWriteMany"],
        description="Every rank reads the checkpoint on resume, so gangs spanning nodes need RWX.",
    )
    trainer_grace_seconds: float = Field(
        25.0, gt=0, description="Trainer deadline for the emergency checkpoint after SIGTERM."
    )
    termination_grace_padding_seconds: int = Field(
        15, ge=0, description="Added to the trainer deadline for the pod's terminationGracePeriodSeconds."
    )
    lost_pod_timeout_seconds: float = Field(
        60.0, gt=0, description="The fencing bound: a pod Terminating this long past its deletion, on a node "
        "not Ready for as long, is force-deleted (at once when its node is gone)."
    )
    failure_backoff_seconds: float = Field(
        10.0, ge=0, description="Delay before recreating a gang after a user-code failure; doubles per failure."
    )
    max_failure_backoff_seconds: float = Field(300.0, ge=0, description="Cap of that delay.")
    resync_seconds: float = Field(5.0, gt=0, description="Reconcile at least this often without events.")
    reconcile_threads: int = Field(
        32, ge=1, le=256, description="Passes that may wait on the apiserver at once (threads, and the client's "
        "connections); a burst of new jobs is launched this many at a time."
    )
    trainer_cache_claim: str | None = Field(
        None,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="A ReadWriteMany claim in each job's namespace that trainer pods share for reference statistics "
        "and the domain classifier (keyed by dataset hash); unset = a cache directory on the checkpoint volume.",
    )
    trainer_env: dict[str, str] = Field(default_factory=dict, description="Extra environment for trainers.")
    # -- export and serving --
    export_cpu: str = Field("1", description="CPU request of an export pod.")
    export_memory: str = Field("2Gi", description="Memory request of an export pod.")
    max_export_attempts: int = Field(
        3, ge=1, description="Export pods started for one job before an interrupted export fails the job."
    )
    model_repository_storage_class: str | None = Field(None, description="StorageClass of created model repositories.")
    model_repository_volume_size: str = Field("5Gi", description="Size of created model repository claims.")
    model_repository_access_modes: list[str] = Field(
        default_factory=lambda: ["ReadWriteMany"],
        description="Exports write and every Triton pod reads, on any node: RWX.",
    )
    analysis_cpu: str = Field("1", description="CPU request of a canary analysis pod.")
    analysis_memory: str = Field("2Gi", description="Memory request of a canary analysis pod.")
    approval_recheck_seconds: float = Field(
        120.0, gt=0, description="While a rollout awaits manual approval, the canary is analysed again this often."
    )
    triton_image: str = Field("nvcr.io/nvidia/tritonserver:24.10-py3", description="Default Triton image.")
    triton_profile: TritonProfile = Field(
        "onnxruntime", description="onnxruntime: the image's ONNX Runtime backend; python-onnxruntime: onnxruntime "
        "inside Triton's python backend (ganforge local's tritonserver)."
    )
    triton_args: list[str] = Field(
        default_factory=lambda: ["--disable-auto-complete-config"],
        description="Extra tritonserver flags for every revision's pods (e.g. CPU-only memory pools).",
    )
    revision_ready_timeout_seconds: int = Field(
        300, ge=30, description="A revision whose pods are not ready this long after a change is Failed."
    )

    @classmethod
    def load(cls, path: str | Path | None, **overrides: Any) -> OperatorSettings:
        raw: dict[str, Any] = {}
        if path:
            try:
                loaded = yaml.safe_load(Path(path).read_text()) or {}
            except (OSError, yaml.YAMLError) as error:
                raise ValueError(f"operator settings file {path}: {error}") from error
            if not isinstance(loaded, dict):
                raise ValueError(f"operator settings file {path}: expected a mapping")
            raw.update(loaded)
        raw.update({key: value for key, value in overrides.items() if value is not None})
        return cls.model_validate(raw)
