"""`ganforge export`: the EMA generator of a verified checkpoint -> a parity-checked ONNX revision.

The ONNX graph takes `z` [N, latentDim] float32 and, for conditional models, `label` [N] int64, and
returns `image` [N, C, R, R] float32 in [-1, 1], with a dynamic batch axis. It is checked by
onnx.checker and by running fixed latents through onnxruntime and PyTorch side by side; a model
outside the parity bound is never written. The revision also carries the real data's reference
feature statistics the trainer evaluated against (from beside the checkpoints), so no later step
needs the dataset.
"""

from __future__ import annotations

import io
import json
import logging
import platform
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import onnx.version_converter
import onnxruntime as ort
import torch
from torch import nn

from ganforge.api.checkpoint_format import (
    EMA_GENERATOR_KEY,
    MANIFEST,
    REFERENCE_DIR,
    SPEC_FILE,
    STATE_FILE,
    CheckpointCorrupt,
    parse_manifest,
    read_verified,
)
from ganforge.api.inference_service import TritonProfile
from ganforge.api.training_job import GANTrainingJobSpec
from ganforge.models import build_generator
from ganforge.serving.model_repository import ModelFacts, Revision, write_revision

log = logging.getLogger(__name__)

ExportPrecision = Literal["fp32", "fp16"]
# Largest |onnxruntime - torch| allowed on the parity latents. fp32: the two runtimes differ only in
# accumulation order. fp16 (weights and activations in half, float32 inputs and outputs kept):
# measured 2e-5 (DCGAN) to 1e-3 (SNGAN) at 16 px in tests/integration/serving; 2e-2 leaves room for deeper nets
# while still failing a broken conversion (errors there are O(0.1-1) on a [-1, 1] output).
PARITY_BOUNDS: dict[ExportPrecision, float] = {"fp32": 1e-4, "fp16": 2e-2}
PARITY_SAMPLES = 64
PARITY_SEED = 20240611
METADATA_PREFIX = "ganforge."


class ExportError(Exception):
    """The export cannot produce a servable model; the message names the file or field at fault."""


@dataclass
class CheckpointGenerator:
    """G_ema rebuilt from a checkpoint, with what the artifact must record about it."""

    module: nn.Module
    facts: ModelFacts
    spec: GANTrainingJobSpec
    manifest: dict[str, Any]
    reference_files: dict[str, bytes] = field(default_factory=dict)


def load_generator(checkpoint: Path) -> CheckpointGenerator:
    """Verify every file of the checkpoint against its manifest, then rebuild G_ema in eval mode."""
    try:
        raw = (checkpoint / MANIFEST).read_bytes()
    except OSError as error:
        raise ExportError(f"{checkpoint / MANIFEST}: cannot read the checkpoint manifest: "
                          f"{error.strerror or error}") from None
    try:
        manifest = parse_manifest(raw)
        files = read_verified(manifest, lambda name: (checkpoint / name).read_bytes())
    except CheckpointCorrupt as error:
        raise ExportError(f"checkpoint {checkpoint} does not verify: {error}") from None
    except OSError as error:
        raise ExportError(f"checkpoint {checkpoint}: reading it failed: {error}") from None
    spec = GANTrainingJobSpec.model_validate(json.loads(files[SPEC_FILE]))
    state = torch.load(io.BytesIO(files[STATE_FILE]), map_location="cpu", weights_only=True)
    missing = [key for key in ("numClasses", "resolution", "channels") if key not in manifest]
    if missing:
        raise ExportError(f"{checkpoint / MANIFEST} lacks {missing}: written by a trainer too old to export from")
    facts = ModelFacts(spec.model.latent_dim, int(manifest["numClasses"]), int(manifest["channels"]),
                       int(manifest["resolution"]))
    generator = build_generator(spec.model, facts.resolution, facts.channels, facts.num_classes)
    try:
        generator.load_state_dict(state[EMA_GENERATOR_KEY])
    except (KeyError, RuntimeError) as error:
        raise ExportError(f"{checkpoint / STATE_FILE}: no usable {EMA_GENERATOR_KEY} for "
                          f"{spec.model.architecture}: {error}") from None
    generator.eval().requires_grad_(False)
    return CheckpointGenerator(generator, facts, spec, manifest, _reference_files(checkpoint.parent))


def _reference_files(checkpoint_root: Path) -> dict[str, bytes]:
    """The reference statistics the trainer wrote beside its checkpoints; none when it evaluated nothing."""
    directory = checkpoint_root / REFERENCE_DIR
    if not (directory / MANIFEST).is_file():
        log.warning("no reference statistics under %s: the artifact carries none", directory)
        return {}
    try:
        manifest = parse_manifest((directory / MANIFEST).read_bytes())
        return read_verified(manifest, lambda name: (directory / name).read_bytes())
    except CheckpointCorrupt as error:
        raise ExportError(f"reference statistics {directory} do not verify: {error}") from None
    except OSError as error:
        raise ExportError(f"reference statistics {directory}: reading them failed: {error}") from None


class _OnnxInterface(nn.Module):
    """The served signature: named inputs, and `label` only when the model is conditional."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        image: torch.Tensor = self.generator(z, label)
        return image


def parity_inputs(facts: ModelFacts, count: int = PARITY_SAMPLES) -> dict[str, np.ndarray]:
    """Fixed latents (and balanced labels), the same for every export and every parity test."""
    rng = np.random.default_rng(PARITY_SEED)
    inputs = {"z": rng.standard_normal((count, facts.latent_dim)).astype(np.float32)}
    if facts.num_classes:
        inputs["label"] = (np.arange(count) % facts.num_classes).astype(np.int64)
    return inputs


def torch_images(generator: nn.Module, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        label = torch.from_numpy(inputs["label"]) if "label" in inputs else None
        out: np.ndarray = generator(torch.from_numpy(inputs["z"]), label).numpy()
    return out


def onnxruntime_images(model: bytes, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    out: np.ndarray = session.run(["image"], dict(inputs))[0]
    return out


# torch.onnx's exporter writes this opset; asked for an earlier one, it converts down, and where
# onnx has no converter for an operator it keeps this one with only a warning. So the export
# converts down itself, after the exporter's optimisations removed the operators (Identity) that
# would block it, and checks what it got.
EXPORTER_OPSET = 18


def to_onnx(generator: nn.Module, facts: ModelFacts, opset: int) -> onnx.ModelProto:
    """torch.export-based ONNX export with a dynamic batch axis, at exactly `opset`."""
    example = parity_inputs(facts, 2)
    args: tuple[torch.Tensor, ...] = tuple(torch.from_numpy(value) for value in example.values())
    batch = torch.export.Dim("batch", min=1, max=65536)
    dynamic = {name: {0: batch} for name in example}
    with warnings.catch_warnings():
        # The exporter warns about torchvision ops it skips.
        warnings.simplefilter("ignore")
        program = torch.onnx.export(_OnnxInterface(generator), args, input_names=list(example),
                                    output_names=["image"], dynamic_shapes=dynamic,
                                    opset_version=max(opset, EXPORTER_OPSET), dynamo=True, verbose=False)
    if program is None:
        raise ExportError("torch.onnx.export returned no program")
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "model.onnx"
        program.save(str(path))
        model = onnx.load(str(path))
    if opset < EXPORTER_OPSET:
        try:
            model = onnx.version_converter.convert_version(model, opset)
        except Exception as error:  # onnx raises a bare RuntimeError for an operator it cannot convert
            raise ExportError(f"spec.export.onnxOpset: this generator cannot be written at opset {opset} "
                              f"({str(error).splitlines()[-1]}); choose {EXPORTER_OPSET} or later") from None
    if (written := default_opset(model)) != opset:
        raise ExportError(f"spec.export.onnxOpset: asked for opset {opset}, the exporter wrote {written}")
    return model


def default_opset(model: onnx.ModelProto) -> int:
    """The version of the default (ai.onnx) operator set the model imports."""
    return int(max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")))


def _to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxconverter_common import float16

    # keep_io_types: clients still send float32 z and receive float32 images.
    converted: onnx.ModelProto = float16.convert_float_to_float16(model, keep_io_types=True)
    return converted


def _set_metadata(model: onnx.ModelProto, metadata: Mapping[str, str]) -> None:
    del model.metadata_props[:]
    for key, value in sorted(metadata.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = f"{METADATA_PREFIX}{key}", value


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    def installed(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "unknown"

    return {"ganforge": installed("ganforge"), "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": ort.__version__, "python": platform.python_version()}


@dataclass(frozen=True)
class JobIdentity:
    namespace: str = ""
    name: str = ""
    uid: str = ""


@dataclass(frozen=True)
class ExportResult:
    revision: Revision
    kimg: float
    checkpoint_sha256: str
    parity_max_abs_diff: float
    parity_bound: float
    onnx_bytes: int


def export_checkpoint(checkpoint: Path, repository: Path, *, opset: int = 17, precision: ExportPrecision = "fp32",
                      profile: TritonProfile = "python-onnxruntime", job: JobIdentity | None = None) -> ExportResult:
    """Checkpoint -> checked ONNX -> a revision in the model repository."""
    loaded = load_generator(checkpoint)
    model = to_onnx(loaded.module, loaded.facts, opset)
    if precision == "fp16":
        model = _to_fp16(model)
    identity = job or JobIdentity()
    manifest = loaded.manifest
    versions = _versions()
    metadata = {
        "job.namespace": identity.namespace, "job.name": identity.name, "job.uid": identity.uid,
        "checkpoint.sha256": str(manifest["_sha256"]), "checkpoint.kimg": f"{float(manifest['kimg']):.3f}",
        "checkpoint.step": str(manifest["step"]), "datasetHash": str(manifest.get("datasetHash", "")),
        "metrics": json.dumps(manifest.get("metrics", {}), sort_keys=True), "precision": precision,
        **{key: str(value) for key, value in loaded.facts.to_wire().items()},
        **{f"version.{name}": value for name, value in versions.items()},
    }
    _set_metadata(model, metadata)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as error:
        raise ExportError(f"the exported ONNX graph does not pass onnx.checker: {error}") from None
    data = model.SerializeToString()
    inputs = parity_inputs(loaded.facts)
    difference = float(np.abs(onnxruntime_images(data, inputs) - torch_images(loaded.module, inputs)).max())
    bound = PARITY_BOUNDS[precision]
    if not difference <= bound:  # also catches NaN
        raise ExportError(f"ONNX parity failed: max |onnxruntime - torch| = {difference:.3g} > {bound:g} ({precision})")
    export_facts = {
        "job": {"namespace": identity.namespace, "name": identity.name, "uid": identity.uid},
        "checkpoint": {"sha256": manifest["_sha256"], "kimg": manifest["kimg"], "step": manifest["step"],
                       "name": checkpoint.name},
        "datasetHash": manifest.get("datasetHash", ""),
        "metrics": manifest.get("metrics", {}),
        "onnx": {"opset": default_opset(model),
                 "precision": precision},
        "parity": {"samples": PARITY_SAMPLES, "maxAbsDiff": difference, "bound": bound},
        "versions": versions,
    }
    revision = write_revision(repository, data, loaded.facts, export_facts, loaded.reference_files, profile)
    log.info("exported %s (kimg %s) to %s: parity %.3g <= %g", checkpoint, manifest["kimg"], revision.path,
             difference, bound)
    return ExportResult(revision, float(manifest["kimg"]), str(manifest["_sha256"]), difference, bound, len(data))
