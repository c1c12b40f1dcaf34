"""The generated GANTrainingJob CRD on a real apiserver: what it rejects, what it defaults, what it shows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ganforge.api import crd
from ganforge.api.training_job import (
    DatasetSpec,
    GANTrainingJobSpec,
    GANTrainingJobStatus,
    TrainingProgress,
)
from tests.invalid_specs import (
    DROP,
    INVALID_SPECS,
    MODEL_REPOSITORIES_APART,
    VALID_SPEC,
    InvalidSpec,
    changed,
    manifest,
)

MANIFEST = Path(__file__).resolve().parents[2] / crd.MANIFEST_PATH


@pytest.fixture(scope="module")
def gtj_crd(kubectl) -> str:
    kubectl.run("apply", "-f", str(MANIFEST))
    kubectl.run("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd.CRD_NAME}")
    return crd.CRD_NAME


def stored(kubectl, namespace: str, name: str) -> dict[str, Any]:
    return json.loads(kubectl.run("get", "gtj", name, "-n", namespace, "-o", "json").stdout)


@pytest.mark.parametrize("case", INVALID_SPECS, ids=[case.id for case in INVALID_SPECS])
def test_invalid_spec_is_rejected_naming_the_field(kubectl, gtj_crd: str, namespace: str, case: InvalidSpec) -> None:
    result = kubectl.apply_document(case.manifest(namespace))
    assert result.returncode != 0, f"{case.id} was accepted:\n{result.stdout}"
    assert case.field in result.stderr, result.stderr
    assert kubectl.run("get", "gtj", "-n", namespace, "-o", "name").stdout == ""


def test_unknown_fields_are_rejected_by_default_and_pruned_when_only_warned(
    kubectl, gtj_crd: str, namespace: str
) -> None:
    document = manifest("extra-field", changed(VALID_SPEC, {"training": {"bogus": 1}}), namespace)
    strict = kubectl.apply_document(document)
    assert strict.returncode != 0
    assert 'strict decoding error: unknown field "spec.training.bogus"' in strict.stderr

    # kubectl's default is --validate=strict; without it the apiserver only warns and prunes.
    warned = kubectl.apply_document(document, "--validate=warn")
    assert warned.returncode == 0, warned.stderr
    assert 'unknown field "spec.training.bogus"' in warned.stderr
    training = stored(kubectl, namespace, "extra-field")["spec"]["training"]
    assert "bogus" not in training and training["batchSize"] == 32


def test_valid_uris_are_accepted(kubectl, gtj_crd: str, namespace: str) -> None:
    uris = [
        ("/data/fashion", "/ckpt/run1"),
        ("file:///data/fashion", "file:///ckpt/run1"),
        ("pvc://datasets/fashion", "pvc://checkpoints.v2/fashion/run1"),
        ("fake://blobs?n=64&classes=4", "s3://bucket/fashion/run1"),
    ]
    for index, (dataset_uri, checkpoint_uri) in enumerate(uris):
        spec = changed(VALID_SPEC, {"dataset": {"uri": dataset_uri}, "checkpoint": {"uri": checkpoint_uri}})
        result = kubectl.apply_document(manifest(f"uris-{index}", spec, namespace))
        assert result.returncode == 0, result.stderr
    without_checkpoint = changed(VALID_SPEC, {"checkpoint": {"uri": DROP}})
    assert kubectl.apply_document(manifest("no-checkpoint-uri", without_checkpoint, namespace)).returncode == 0
    for index, spec in enumerate(MODEL_REPOSITORIES_APART):
        result = kubectl.apply_document(manifest(f"apart-{index}", spec, namespace))
        assert result.returncode == 0, result.stderr


IMMUTABLE_CHANGES = [
    ("spec.dataset", {"dataset": {"uri": "fake://other?n=256&classes=4"}}),
    ("spec.dataset", {"dataset": {"resolution": 32}}),
    ("spec.model", {"model": {"architecture": "sngan-resnet"}}),
    ("spec.resources.workers", {"resources": {"workers": 4}}),
    ("spec.resources.gpusPerWorker", {"resources": {"gpusPerWorker": 1}}),
    ("spec.training.batchSize", {"training": {"batchSize": 64}}),
    ("spec.training.seed", {"training": {"seed": 7}}),
    ("spec.training.precision", {"training": {"precision": "bf16"}}),
    ("spec.training.dStepsPerG", {"training": {"dStepsPerG": 2}}),
    ("spec.training.optimizer", {"training": {"optimizer": {"gLr": 0.001}}}),
    ("spec.training.channelsLast", {"training": {"channelsLast": True}}),
    ("spec.training.compile", {"training": {"compile": True}}),
    ("spec.training.augment", {"training": {"augment": {"policy": ["cutout"]}}}),
    ("spec.resources.processesPerWorker", {"resources": {"processesPerWorker": 2}}),
    ("spec.training.deterministic", {"training": {"deterministic": True}}),
    ("spec.checkpoint.uri", {"checkpoint": {"uri": "pvc://checkpoints/elsewhere"}}),
    ("spec.checkpoint.uri", {"checkpoint": {"uri": DROP}}),
]


@pytest.mark.parametrize(
    ("field", "change"), IMMUTABLE_CHANGES, ids=[f"{field}-{i}" for i, (field, _) in enumerate(IMMUTABLE_CHANGES)]
)
def test_fixed_fields_are_immutable(
    kubectl, gtj_crd: str, namespace: str, field: str, change: dict[str, Any]
) -> None:
    assert kubectl.apply_document(manifest("fixed", VALID_SPEC, namespace)).returncode == 0
    before = stored(kubectl, namespace, "fixed")["spec"]
    result = kubectl.apply_document(manifest("fixed", changed(VALID_SPEC, change), namespace))
    assert result.returncode != 0, f"{field} changed:\n{result.stdout}"
    assert f"{field} is immutable" in result.stderr, result.stderr
    assert stored(kubectl, namespace, "fixed")["spec"] == before


def test_run_length_retries_and_evaluation_may_change(kubectl, gtj_crd: str, namespace: str) -> None:
    assert kubectl.apply_document(manifest("extended", VALID_SPEC, namespace)).returncode == 0
    longer = changed(
        VALID_SPEC,
        {
            "training": {"totalKimg": 500},
            "backoffLimit": 7,
            "evaluation": {"numSamples": 5000},
            "resources": {"cpu": "2", "memory": "4Gi"},
            "rollout": {"service": "fashion", "steps": [25, 100]},
        },
    )
    result = kubectl.apply_document(manifest("extended", longer, namespace))
    assert result.returncode == 0, result.stderr
    spec = stored(kubectl, namespace, "extended")["spec"]
    assert (spec["training"]["totalKimg"], spec["backoffLimit"], spec["evaluation"]["numSamples"]) == (500, 7, 5000)
    assert spec["resources"]["memory"] == "4Gi" and spec["rollout"]["steps"] == [25, 100]


def test_apiserver_defaults_match_pydantic(kubectl, gtj_crd: str, namespace: str) -> None:
    result = kubectl.apply_document(manifest("minimal", {"dataset": {"uri": "fake://x"}}, namespace))
    assert result.returncode == 0, result.stderr
    spec = stored(kubectl, namespace, "minimal")["spec"]
    expected = GANTrainingJobSpec(dataset=DatasetSpec(uri="fake://x"))
    assert GANTrainingJobSpec.model_validate(spec) == expected
    # Every default is filled in by the apiserver itself, not left for pydantic to supply.
    assert spec == expected.model_dump(by_alias=True, mode="json", exclude_none=True)


def test_status_subresource_and_printer_columns(kubectl, gtj_crd: str, namespace: str) -> None:
    with_status = {**manifest("watched", VALID_SPEC, namespace), "status": {"phase": "Succeeded"}}
    assert kubectl.apply_document(with_status).returncode == 0
    # With the status subresource, writes to the main resource leave status alone.
    assert "status" not in stored(kubectl, namespace, "watched")

    status = GANTrainingJobStatus(
        phase="Running", progress=TrainingProgress(kimg=12.5, step=390), metrics={"fd_domain": 3.25}, preemptions=2
    )
    patch = json.dumps({"status": status.model_dump(by_alias=True, mode="json", exclude_none=True)})
    kubectl.run("patch", "gtj", "watched", "-n", namespace, "--subresource=status", "--type=merge", "-p", patch)
    assert GANTrainingJobStatus.model_validate(stored(kubectl, namespace, "watched")["status"]) == status

    table = kubectl.run("get", "gtj", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "KIMG", "FD", "PREEMPTIONS", "AGE"]
    assert table[1].split()[:5] == ["watched", "Running", "12.5", "3.25", "2"]

    bad = kubectl.run(
        "patch", "gtj", "watched", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", '{"status": {"phase": "Bogus"}}', check=False,
    )
    assert bad.returncode != 0 and "status.phase" in bad.stderr
