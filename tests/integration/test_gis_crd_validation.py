"""The generated GANInferenceService CRD on a real apiserver: what it rejects, what it defaults, what it shows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ganforge.api import crd
from ganforge.api.inference_service import (
    GANInferenceServiceSpec,
    GANInferenceServiceStatus,
    ServiceCondition,
)
from tests.invalid_gis_specs import (
    INVALID_GIS_SPECS,
    MINIMAL_SPEC,
    VALID_SPEC,
    InvalidGisSpec,
    manifest,
)
from tests.invalid_specs import DROP, changed

DEFINITION = crd.INFERENCE_SERVICE
MANIFEST = Path(__file__).resolve().parents[2] / DEFINITION.manifest_path


@pytest.fixture(scope="module")
def gis_crd(kubectl) -> str:
    kubectl.run("apply", "-f", str(MANIFEST))
    kubectl.run("wait", "--for=condition=Established", "--timeout=60s", f"crd/{DEFINITION.name}")
    return DEFINITION.name


def stored(kubectl, namespace: str, name: str) -> dict[str, Any]:
    return json.loads(kubectl.run("get", "gis", name, "-n", namespace, "-o", "json").stdout)


@pytest.mark.parametrize("case", INVALID_GIS_SPECS, ids=[case.id for case in INVALID_GIS_SPECS])
def test_invalid_spec_is_rejected_naming_the_field(
    kubectl, gis_crd: str, namespace: str, case: InvalidGisSpec
) -> None:
    result = kubectl.apply_document(case.manifest(namespace))
    assert result.returncode != 0, f"{case.id} was accepted:\n{result.stdout}"
    for field in case.fields:
        assert field in result.stderr, result.stderr
    assert kubectl.run("get", "gis", "-n", namespace, "-o", "name").stdout == ""


def test_minimal_service_is_accepted_and_defaulted_like_pydantic(kubectl, gis_crd: str, namespace: str) -> None:
    result = kubectl.apply_document(manifest("fashion", MINIMAL_SPEC, namespace))
    assert result.returncode == 0, result.stderr
    spec = stored(kubectl, namespace, "fashion")["spec"]
    expected = GANInferenceServiceSpec.model_validate(MINIMAL_SPEC)
    assert GANInferenceServiceSpec.model_validate(spec) == expected
    # Every default is filled in by the apiserver itself, not left for pydantic to supply.
    assert spec == expected.model_dump(by_alias=True, mode="json", exclude_none=True)
    assert spec["triton"]["replicas"] == 1 and spec["rollout"]["steps"] == [10, 50, 100]


def test_valid_services_are_accepted(kubectl, gis_crd: str, namespace: str) -> None:
    accepted = {
        "artifact": VALID_SPEC,
        "bare-claim": changed(VALID_SPEC, {"source": {"artifact": {"uri": "pvc://models.v2"}}}),
        # An explicit null is no source, as in pydantic.
        "null-training-job": changed(VALID_SPEC, {"source": {"trainingJob": None}}),
        "null-artifact": {"source": {"trainingJob": "fashion", "artifact": None}},
        "longest-name": MINIMAL_SPEC,
    }
    for name, spec in accepted.items():
        if name == "longest-name":
            name = "n" * 40
        GANInferenceServiceSpec.model_validate(spec)
        result = kubectl.apply_document(manifest(name, spec, namespace))
        assert result.returncode == 0, f"{name}: {result.stderr}"


MODEL_NAME_CHANGES = [
    ("renamed", {"modelName": "fashion-v2"}, VALID_SPEC),
    ("removed", {"modelName": DROP}, VALID_SPEC),
    ("added", {"modelName": "fashion"}, changed(VALID_SPEC, {"modelName": DROP})),
]


@pytest.mark.parametrize(("change", "spec"), [(c, s) for _, c, s in MODEL_NAME_CHANGES],
                         ids=[i for i, _, _ in MODEL_NAME_CHANGES])
def test_model_name_is_immutable(
    kubectl, gis_crd: str, namespace: str, change: dict[str, Any], spec: dict[str, Any]
) -> None:
    assert kubectl.apply_document(manifest("fashion", spec, namespace)).returncode == 0
    before = stored(kubectl, namespace, "fashion")["spec"]
    result = kubectl.apply_document(manifest("fashion", changed(spec, change), namespace))
    assert result.returncode != 0, f"spec.modelName changed:\n{result.stdout}"
    assert "spec.modelName is immutable" in result.stderr, result.stderr
    assert stored(kubectl, namespace, "fashion")["spec"] == before


def test_source_triton_and_rollout_may_change(kubectl, gis_crd: str, namespace: str) -> None:
    assert kubectl.apply_document(manifest("fashion", VALID_SPEC, namespace)).returncode == 0
    updated = changed(
        VALID_SPEC,
        {
            "source": {"artifact": DROP, "trainingJob": "fashion-mnist-dcgan"},
            "triton": {"replicas": 3, "threads": 2},
            "rollout": {"steps": [25, 100], "approval": "manual"},
        },
    )
    result = kubectl.apply_document(manifest("fashion", updated, namespace))
    assert result.returncode == 0, result.stderr
    spec = stored(kubectl, namespace, "fashion")["spec"]
    assert spec["source"] == {"trainingJob": "fashion-mnist-dcgan"}
    assert (spec["triton"]["replicas"], spec["rollout"]["steps"]) == (3, [25, 100])


def test_status_subresource_and_printer_columns(kubectl, gis_crd: str, namespace: str) -> None:
    with_status = {**manifest("fashion", VALID_SPEC, namespace), "status": {"phase": "Ready"}}
    assert kubectl.apply_document(with_status).returncode == 0
    # With the status subresource, writes to the main resource leave status alone.
    assert "status" not in stored(kubectl, namespace, "fashion")

    status = GANInferenceServiceStatus(
        phase="Progressing",
        model_name="fashion",
        stable_revision="r0123456789",
        canary_revision="rabcdefabcd",
        canary_weight=10,
        endpoint=f"http://fashion.{namespace}.svc:8000",
        conditions=[
            ServiceCondition(type="Progressing", status="True", reason="CanaryStep",
                             last_transition_time="2025-01-01T00:01:00Z"),
            ServiceCondition(type="Ready", status="True", reason="StableServing",
                             last_transition_time="2025-01-01T00:00:00Z", observed_generation=1),
        ],
    )
    patch = json.dumps({"status": status.model_dump(by_alias=True, mode="json", exclude_none=True)})
    kubectl.run("patch", "gis", "fashion", "-n", namespace, "--subresource=status", "--type=merge", "-p", patch)
    assert GANInferenceServiceStatus.model_validate(stored(kubectl, namespace, "fashion")["status"]) == status

    table = kubectl.run("get", "gis", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "MODEL", "STABLE", "CANARY", "WEIGHT", "READY", "AGE"]
    assert table[1].split()[:6] == ["fashion", "fashion", "r0123456789", "rabcdefabcd", "10", "True"]
    # The short name and the category reach it too.
    assert kubectl.run("get", "ganforge", "-n", namespace, "-o", "name").stdout.split() == [
        "ganinferenceservice.ganforge.io/fashion"
    ]

    bad = kubectl.run(
        "patch", "gis", "fashion", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", '{"status": {"canaryWeight": 101}}', check=False,
    )
    assert bad.returncode != 0 and "status.canaryWeight" in bad.stderr
