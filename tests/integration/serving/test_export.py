"""ONNX export of the EMA generator: parity with PyTorch for every family, conditional or not, in
fp32 and fp16; and what happens to bad input (a corrupt checkpoint, a truncated revision)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from ganforge.api.checkpoint_format import REFERENCE_DIR, with_manifest
from ganforge.api.inference_service import TritonSpec
from ganforge.api.training_job import ExportSpec, GANTrainingJobSpec
from ganforge.evaluation import ReferenceStatistics
from ganforge.evaluation.metrics import FeatureStatistics
from ganforge.models import build_models
from ganforge.serving.export import (
    EXPORTER_OPSET,
    PARITY_BOUNDS,
    ExportError,
    JobIdentity,
    default_opset,
    export_checkpoint,
    load_generator,
    onnxruntime_images,
    parity_inputs,
    torch_images,
)
from ganforge.serving.model_repository import (
    MANIFEST,
    RevisionError,
    prepare_model_directory,
    verify_revision,
)
from ganforge.trainer.checkpoint import LocalStorage, checkpoint_name, encode_checkpoint


def write_checkpoint(root: Path, architecture: str, num_classes: int, seed: int = 0) -> Path:
    """A checkpoint as the trainer writes it, of a generator with (seeded) random weights."""
    spec = GANTrainingJobSpec.model_validate({
        "dataset": {"uri": "fake://blobs", "format": "fake", "resolution": 16, "conditional": bool(num_classes)},
        "model": {"architecture": architecture, "latentDim": 16, "width": 8},
        "resources": {"workers": 1, "gpusPerWorker": 0},
    })
    torch.manual_seed(seed)
    g, d = build_models(spec.model, 16, 1, num_classes)
    # Non-trivial BatchNorm statistics, as after training, so parity covers them too.
    for module in g.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    state = {"G": g.state_dict(), "D": d.state_dict(), "G_ema": g.state_dict()}
    meta = {"nimg": 1280, "kimg": 1.28, "step": 20, "numClasses": num_classes, "resolution": 16, "channels": 1,
            "datasetHash": "d" * 64, "metrics": {"fd_domain": 12.5}}
    storage = LocalStorage(root)
    storage.write_checkpoint(checkpoint_name(1280), encode_checkpoint(state, meta, spec.to_wire()))
    stats = FeatureStatistics.from_features(np.random.default_rng(0).standard_normal((32, 4)))
    reference = ReferenceStatistics("d" * 64, num_classes, {"domain": stats})
    storage.write_checkpoint(REFERENCE_DIR, with_manifest(reference.to_files(), {"datasetHash": "d" * 64}))
    return root / checkpoint_name(1280)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("num_classes", [0, 4])
@pytest.mark.parametrize("architecture", ["dcgan", "sngan-resnet"])
def test_onnx_matches_pytorch(tmp_path: Path, architecture: str, num_classes: int, precision: str) -> None:
    checkpoint = write_checkpoint(tmp_path / "ckpt", architecture, num_classes)
    result = export_checkpoint(checkpoint, tmp_path / "repo", opset=17, precision=precision,  # type: ignore[arg-type]
                               job=JobIdentity("ns", "job", "uid-1"))
    revision = result.revision
    assert revision.name == f"r{revision.sha256[:10]}" and revision.path.is_dir()
    facts = verify_revision(revision.path, revision.sha256)
    assert facts["parity"]["maxAbsDiff"] <= PARITY_BOUNDS[precision]  # type: ignore[index]
    assert facts["onnx"] == {"opset": 17, "precision": precision}
    print(f"\n{architecture} classes={num_classes} {precision}: max |ort - torch| = {result.parity_max_abs_diff:.3g}")

    onnx_path = revision.path / "model" / "1" / "model.onnx"
    model = onnx.load(str(onnx_path))
    onnx.checker.check_model(model, full_check=True)
    inputs = {i.name: i for i in model.graph.input}
    assert set(inputs) == ({"z", "label"} if num_classes else {"z"})
    assert inputs["z"].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    metadata = {p.key: p.value for p in model.metadata_props}
    assert (metadata["ganforge.job.namespace"], metadata["ganforge.job.name"], metadata["ganforge.job.uid"]) == (
        "ns", "job", "uid-1")
    assert metadata["ganforge.checkpoint.kimg"] == "1.280" and metadata["ganforge.precision"] == precision
    assert metadata["ganforge.version.torch"] == torch.__version__
    assert metadata["ganforge.version.onnx"] == onnx.__version__
    assert metadata["ganforge.version.onnxruntime"] == onnxruntime.__version__
    assert metadata["ganforge.version.ganforge"] == importlib.metadata.version("ganforge")
    assert metadata["ganforge.datasetHash"] == "d" * 64 and json.loads(metadata["ganforge.metrics"]) == {
        "fd_domain": 12.5}
    assert metadata["ganforge.checkpoint.sha256"] == hashlib.sha256(
        (checkpoint / "manifest.json").read_bytes()).hexdigest()

    # Any batch size, output in [-1, 1] with the served shape, equal to PyTorch on other latents too.
    generator = load_generator(checkpoint).module
    for count in (1, 7):
        batch = {k: v[:count] for k, v in parity_inputs(load_generator(checkpoint).facts, 64).items()}
        batch["z"] = batch["z"][::-1].copy()
        out = onnxruntime_images(onnx_path.read_bytes(), batch)
        assert out.shape == (count, 1, 16, 16) and out.dtype == np.float32
        assert np.abs(out).max() <= 1.0
        assert np.abs(out - torch_images(generator, batch)).max() <= PARITY_BOUNDS[precision]  # type: ignore[index]
    assert (revision.path / "reference" / "reference.json").is_file()


@pytest.mark.parametrize("architecture", ["dcgan", "sngan-resnet"])
def test_every_opset_the_spec_allows_is_written_exactly(tmp_path: Path, architecture: str) -> None:
    """The exporter writes opset 18 and, asked for less, converts down; where it cannot, it kept
    18 with only a warning. The export converts itself and checks: the model carries the asked opset."""
    checkpoint = write_checkpoint(tmp_path / "ckpt", architecture, 4)
    field = ExportSpec.model_fields["onnx_opset"]
    lowest, highest = (next(m for m in field.metadata if hasattr(m, bound)) for bound in ("ge", "le"))
    for opset in (lowest.ge, 16, EXPORTER_OPSET, highest.le):
        result = export_checkpoint(checkpoint, tmp_path / "repo", opset=opset)
        model = onnx.load(str(result.revision.path / "model" / "1" / "model.onnx"))
        assert default_opset(model) == opset, architecture
        assert verify_revision(result.revision.path, result.revision.sha256)["onnx"]["opset"] == opset  # type: ignore[index]
    # Below what the spec allows, SNGAN's BatchNormalization has no converter: a clear refusal.
    if architecture == "sngan-resnet":
        with pytest.raises(ExportError, match=r"spec\.export\.onnxOpset: .* opset 14 .*BatchNormalization"):
            export_checkpoint(checkpoint, tmp_path / "repo", opset=14)


def test_exporting_again_reuses_the_identical_revision(tmp_path: Path) -> None:
    checkpoint = write_checkpoint(tmp_path / "ckpt", "dcgan", 4)
    first = export_checkpoint(checkpoint, tmp_path / "repo")
    second = export_checkpoint(checkpoint, tmp_path / "repo")
    assert first.revision == second.revision
    assert [p.name for p in (tmp_path / "repo").iterdir()] == [first.revision.name]


def test_a_corrupt_checkpoint_is_refused_naming_the_file(tmp_path: Path) -> None:
    checkpoint = write_checkpoint(tmp_path / "ckpt", "dcgan", 0)
    state = checkpoint / "state.pt"
    state.write_bytes(state.read_bytes()[:-100])
    with pytest.raises(ExportError, match=r"state\.pt has \d+ bytes"):
        export_checkpoint(checkpoint, tmp_path / "repo")
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())


def test_a_truncated_or_mismatched_revision_never_reaches_triton(tmp_path: Path) -> None:
    revision = export_checkpoint(write_checkpoint(tmp_path / "ckpt", "dcgan", 4), tmp_path / "repo").revision
    target = tmp_path / "models" / "fashion"
    facts = prepare_model_directory(revision.path, revision.sha256, target, "python-onnxruntime", TritonSpec())
    assert facts.num_classes == 4 and (target / "1" / "model.onnx").is_file() and (target / "1" / "model.py").is_file()
    assert 'backend: "python"' in (target / "config.pbtxt").read_text()

    with pytest.raises(RevisionError, match=r"sha256 is .* expected"):
        prepare_model_directory(revision.path, "0" * 64, tmp_path / "models" / "other", "onnxruntime", TritonSpec())
    with pytest.raises(RevisionError, match="does not exist"):
        verify_revision(tmp_path / "repo" / "r0000000000", revision.sha256)
    onnx_file = revision.path / "model" / "1" / "model.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:1000])
    with pytest.raises(RevisionError, match=r"model/1/model\.onnx: 1000 bytes, the manifest says"):
        prepare_model_directory(revision.path, revision.sha256, tmp_path / "models" / "again", "onnxruntime",
                                TritonSpec())
    assert not (tmp_path / "models" / "again").exists()
    assert (revision.path / MANIFEST).is_file()
