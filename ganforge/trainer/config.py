"""Config file -> validated `GANTrainingJobSpec` + runtime options -> `training_options.json`."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ganforge.api import storage
from ganforge.api.training_job import GANTrainingJob, GANTrainingJobSpec
from ganforge.api.trajectory import ADDED_LATER, ANY_VALUE, EARLIER_FINGERPRINTS, TRAJECTORY_FIELDS
from ganforge.trainer.errors import ConfigError

OPTIONS_FILE = "training_options.json"


@dataclass(frozen=True)
class RuntimeOptions:
    """Settings of one trainer process that are not part of the job spec (flags or env)."""

    run_dir: str = "runs/default"
    metrics_port: int = 0
    pvc_root: str = storage.PVC_MOUNT_ROOT
    cache_dir: str = field(default_factory=lambda: str(Path.home() / ".cache" / "ganforge"))
    grace_seconds: float = 25.0
    device: str = "auto"
    threads: int = 0
    allow_config_change: bool = False
    dist_timeout_seconds: float = 1800.0
    tensorboard: bool = True


@dataclass(frozen=True)
class TrainingOptions:
    spec: GANTrainingJobSpec
    runtime: RuntimeOptions
    job_name: str | None = None

    @property
    def config_hash(self) -> str:
        return trajectory_hash(self.spec)

    @property
    def accepted_config_hashes(self) -> list[str]:
        return accepted_trajectory_hashes(self.spec)

    def to_json(self) -> dict[str, Any]:
        return {
            "jobName": self.job_name,
            "spec": self.spec.to_wire(),
            "runtime": asdict(self.runtime),
            "configHash": self.config_hash,
        }


def _format_validation_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        loc = ".".join(str(part) for part in item["loc"])
        path = "spec" + (f".{loc}" if loc else "")
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {message}")
    return "; ".join(lines)


def parse_spec(document: Any, source: str = "<config>") -> tuple[GANTrainingJobSpec, str | None]:
    """Validate a spec, or a whole GANTrainingJob object, into the typed spec (and the job name)."""
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: expected a mapping (a GANTrainingJob or its spec), got {type(document).__name__}")
    try:
        if "spec" in document:
            job = GANTrainingJob.model_validate(document)
            return job.spec, job.metadata.name
        return GANTrainingJobSpec.model_validate(document), None
    except ValidationError as error:
        # GANTrainingJob's own locations already start with "spec"; strip it so both forms read alike.
        message = _format_validation_error(error).replace("spec.spec.", "spec.").replace("spec.spec:", "spec:")
        raise ConfigError(f"{source}: {message}") from None


def load_spec_file(path: str | Path) -> tuple[GANTrainingJobSpec, str | None]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read config file: {error.strerror or error}") from None
    try:
        document = yaml.safe_load(text)  # JSON is a subset of YAML
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML/JSON: {error}") from None
    return parse_spec(document, str(path))


def trajectory_hash(spec: GANTrainingJobSpec) -> str:
    """The resume fingerprint this trainer writes."""
    return _digest(_trajectory(spec))


def accepted_trajectory_hashes(spec: GANTrainingJobSpec) -> list[str]:
    """Every fingerprint a checkpoint of this spec may carry: this trainer's, then those earlier
    trainers wrote, for as long as the spec holds the values each implied."""
    picked = _trajectory(spec)
    hashes = [_digest(picked)]
    for added in reversed(EARLIER_FINGERPRINTS):
        if not all(_drop(picked, path, value) for path, value in added.items()):
            break  # the spec uses a field the earlier trainers did not have
        hashes.append(_digest(picked))
    return hashes


def _trajectory(spec: GANTrainingJobSpec) -> dict[str, Any]:
    wire = spec.to_wire()
    picked: dict[str, Any] = {}
    for section, keys in TRAJECTORY_FIELDS.items():
        value = wire[section]
        picked[section] = value if keys is None else {k: v for k, v in value.items() if k in keys}
    for path, unchanged in ADDED_LATER.items():
        _drop(picked, path, unchanged)
    return picked


def _drop(picked: dict[str, Any], path: str, unchanged: Any) -> bool:
    """Leaves the field at `path` out when it holds `unchanged` (or is absent); False if it holds
    another value."""
    *parents, key = path.split(".")
    holder = picked
    for name in parents:
        holder = holder.get(name, {})
    if key in holder and unchanged is not ANY_VALUE and holder[key] != unchanged:
        return False
    holder.pop(key, None)
    return True


def _digest(picked: dict[str, Any]) -> str:
    canonical = json.dumps(picked, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def write_options(options: TrainingOptions) -> Path:
    run_dir = Path(options.runtime.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / OPTIONS_FILE
    tmp = target.with_suffix(".json.partial")
    tmp.write_text(json.dumps(options.to_json(), indent=2) + "\n")
    os.replace(tmp, target)
    return target


def resolve_uri(uri: str, pvc_root: str) -> str:
    """ganforge.api.storage.resolve_uri, with a malformed URI as the trainer's ConfigError."""
    try:
        return storage.resolve_uri(uri, pvc_root)
    except ValueError as error:
        raise ConfigError(str(error)) from None
