"""The Triton model repository: one immutable directory per revision of a served generator.

    <repository>/<job>/r0123456789/     a revision: "r" + 10 hex digits of its manifest's sha256
        manifest.json                   size and sha256 of every file below; its own sha256 is the
                                        revision's identity (GANInferenceService spec/status)
        export.json                     what the model is (shapes, classes), where it came from
                                        (job, checkpoint, dataset hash, metrics) and its parity
        model/                          a complete Triton model directory
            config.pbtxt                default serving settings for the profile it was exported for
            1/model.onnx                the EMA generator
            1/model.py                  Triton python-backend model that runs model.onnx through
                                        onnxruntime (the local profile; ignored by onnxruntime_onnx)
        reference/                      the real data's reference feature statistics

A revision is written into a temporary directory and renamed into place, so it either exists whole
or not at all, and an existing revision is never overwritten: exporting the same checkpoint again
finds the identical revision and reuses it. Nothing here imports torch; the Triton pod's init step
(`prepare_model_directory`) uses it to verify a revision and lay out its model for Triton.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ganforge.api.checkpoint_format import sha256_hex
from ganforge.api.inference_service import TritonProfile, TritonSpec, revision_name

MANIFEST = "manifest.json"
EXPORT_FACTS = "export.json"
MODEL_DIR = "model"
REFERENCE_DIR = "reference"
ONNX_FILE = "model.onnx"
PYTHON_MODEL_FILE = "model.py"
MODEL_VERSION = "1"
PYTHON_MODEL_SOURCE = Path(__file__).with_name("triton_onnx_model.py")



class RevisionError(Exception):
    """A revision that is missing, incomplete or not what its sha256 says; the message names the file."""


@dataclass(frozen=True)
class ModelFacts:
    """The served model's interface, as the export measured it."""

    latent_dim: int
    num_classes: int  # 0 = unconditional: no `label` input
    channels: int
    resolution: int

    def to_wire(self) -> dict[str, int]:
        return {"latentDim": self.latent_dim, "numClasses": self.num_classes, "channels": self.channels,
                "resolution": self.resolution}

    @classmethod
    def from_wire(cls, value: Mapping[str, Any]) -> ModelFacts:
        return cls(int(value["latentDim"]), int(value["numClasses"]), int(value["channels"]), int(value["resolution"]))


@dataclass(frozen=True)
class Revision:
    name: str
    path: Path
    sha256: str  # of manifest.json


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- Triton configuration ------------------------------------------------------------------------


def render_config(facts: ModelFacts, profile: TritonProfile, serving: TritonSpec) -> str:
    """config.pbtxt for the model. No `name`: Triton takes the directory's, which the serving pod
    sets to the service's model name. The label input is one integer per sample; Triton batches
    [N, 1] requests and `reshape` hands the model the [N] the ONNX graph takes."""
    if profile == "onnxruntime":
        engine = 'platform: "onnxruntime_onnx"\ndefault_model_filename: "model.onnx"'
        parameters = {"intra_op_thread_count": str(serving.threads), "inter_op_thread_count": "1"}
    else:
        engine = 'backend: "python"'
        parameters = {"intra_op_thread_count": str(serving.threads), "onnx_file": ONNX_FILE}
    inputs = [f'  {{ name: "z" data_type: TYPE_FP32 dims: [ {facts.latent_dim} ] }}']
    # zero_data, not random_data: Triton fills random_data with arbitrary bytes, and a float read
    # from them can be NaN or 1e38, which the model (rightly) refuses as non-finite output.
    z_warmup = f'data_type: TYPE_FP32 dims: [ {facts.latent_dim} ] zero_data: true'
    warmup_inputs = [f'inputs {{ key: "z" value: {{ {z_warmup} }} }}']
    if facts.num_classes:
        inputs.append('  { name: "label" data_type: TYPE_INT64 dims: [ 1 ] reshape: { shape: [ ] } }')
        warmup_inputs.append('inputs { key: "label" value: { data_type: TYPE_INT64 dims: [ 1 ] zero_data: true } }')
    output = (f'  {{ name: "image" data_type: TYPE_FP32 '
              f"dims: [ {facts.channels}, {facts.resolution}, {facts.resolution} ] }}")
    parameter_lines = "\n".join(f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}'
                                for key, value in parameters.items())
    warmups = "\n".join(
        f'model_warmup [ {{ name: "warmup-{batch}" batch_size: {batch} {" ".join(warmup_inputs)} }} ]'
        for batch in sorted({1, serving.max_batch_size})
    )
    return (
        f"{engine}\n"
        f"max_batch_size: {serving.max_batch_size}\n"
        "input [\n" + ",\n".join(inputs) + "\n]\n"
        "output [\n" + output + "\n]\n"
        f"dynamic_batching {{ max_queue_delay_microseconds: {serving.max_queue_delay_microseconds} }}\n"
        f"instance_group [ {{ count: {serving.instances} kind: KIND_CPU }} ]\n"
        f"{parameter_lines}\n"
        f"{warmups}\n"
    )


# -- writing a revision --------------------------------------------------------------------------


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _manifest(root: Path) -> bytes:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)
    entries = {str(p.relative_to(root)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in files}
    return json.dumps({"files": entries}, indent=2, sort_keys=True).encode()


def write_revision(repository: Path, onnx_model: bytes, facts: ModelFacts, export_facts: Mapping[str, Any],
                   reference_files: Mapping[str, bytes], profile: TritonProfile) -> Revision:
    """Publish a new revision under `repository` (atomically; an identical one is reused)."""
    repository.mkdir(parents=True, exist_ok=True)
    staging = repository / f".staging-{uuid.uuid4().hex[:12]}"
    try:
        model = staging / MODEL_DIR
        _write(model / MODEL_VERSION / ONNX_FILE, onnx_model)
        _write(model / MODEL_VERSION / PYTHON_MODEL_FILE, PYTHON_MODEL_SOURCE.read_bytes())
        _write(model / "config.pbtxt", render_config(facts, profile, TritonSpec()).encode())
        for name, data in reference_files.items():
            _write(staging / REFERENCE_DIR / name, data)
        document = {**export_facts, "model": facts.to_wire(), "profile": profile}
        _write(staging / EXPORT_FACTS, json.dumps(document, indent=2, sort_keys=True).encode())
        manifest = _manifest(staging)
        _write(staging / MANIFEST, manifest)
        sha = sha256_hex(manifest)
        target = repository / revision_name(sha)
        for directory in [*sorted({p for p in staging.rglob("*") if p.is_dir()}, reverse=True), staging]:
            _fsync(directory)
        try:
            os.rename(staging, target)
        except OSError:
            # rename() onto an existing non-empty directory fails: that revision exists already.
            if not target.is_dir():
                raise
            verify_revision(target, sha)
        _fsync(repository)
        return Revision(target.name, target, sha)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# -- reading a revision --------------------------------------------------------------------------


def verify_revision(path: Path, expected_sha256: str) -> dict[str, Any]:
    """Check that `path` is the revision with that manifest sha256 and every file matches its
    entry; returns its export facts. Errors name the file at fault."""
    manifest_path = path / MANIFEST
    if not path.is_dir():
        raise RevisionError(f"revision {path} does not exist")
    try:
        raw = manifest_path.read_bytes()
    except OSError as error:
        raise RevisionError(f"{manifest_path}: cannot read the manifest: {error.strerror or error}") from None
    actual = sha256_hex(raw)
    if actual != expected_sha256:
        raise RevisionError(f"{manifest_path}: sha256 is {actual}, expected {expected_sha256}")
    try:
        entries = json.loads(raw)["files"]
    except (ValueError, KeyError, TypeError) as error:
        raise RevisionError(f"{manifest_path}: not a revision manifest: {error}") from None
    for relative, entry in entries.items():
        file = path / relative
        if not file.is_file():
            raise RevisionError(f"{file}: missing (listed in {manifest_path})")
        size = file.stat().st_size
        if size != entry["bytes"]:
            raise RevisionError(f"{file}: {size} bytes, the manifest says {entry['bytes']} (truncated or replaced)")
        if sha256_file(file) != entry["sha256"]:
            raise RevisionError(f"{file}: sha256 does not match the manifest")
    if EXPORT_FACTS not in entries or f"{MODEL_DIR}/{MODEL_VERSION}/{ONNX_FILE}" not in entries:
        raise RevisionError(f"{manifest_path}: lists no {EXPORT_FACTS} or {MODEL_DIR}/{MODEL_VERSION}/{ONNX_FILE}")
    facts: dict[str, Any] = json.loads((path / EXPORT_FACTS).read_bytes())
    return facts


def prepare_model_directory(revision: Path, expected_sha256: str, target: Path, profile: TritonProfile,
                            serving: TritonSpec) -> ModelFacts:
    """What a serving pod runs before Triton starts: verify the revision, copy its model directory
    to `target` (Triton's `<repository>/<model name>`) and write config.pbtxt for this service's
    settings. A revision that fails verification never reaches Triton."""
    facts = ModelFacts.from_wire(verify_revision(revision, expected_sha256)["model"])
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
    shutil.copytree(revision / MODEL_DIR, staging)
    (staging / "config.pbtxt").write_text(render_config(facts, profile, serving))
    if target.exists():
        shutil.rmtree(target)
    os.rename(staging, target)
    return facts
