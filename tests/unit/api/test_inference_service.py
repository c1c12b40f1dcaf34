"""The GANInferenceService models: what pydantic accepts, rejects and defaults (no cluster needed)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from ganforge.api.inference_service import (
    MAX_SERVICE_NAME_LENGTH,
    MODEL_NAME_PATTERN,
    REVISION_PATTERN,
    ArtifactRef,
    GANInferenceService,
    GANInferenceServiceSpec,
    GANInferenceServiceStatus,
    ModelSource,
    RevisionStatus,
    ServiceCondition,
    TritonSpec,
    revision_name,
)
from ganforge.api.training_job import DEFAULT_KID_MARGIN, Condition, RolloutPolicy, RolloutSpec
from tests.invalid_gis_specs import (
    INVALID_GIS_SPECS,
    MANIFEST_SHA256,
    MINIMAL_SPEC,
    VALID_SPEC,
    InvalidGisSpec,
    manifest,
)


def test_the_valid_specs_are_valid() -> None:
    service = GANInferenceService.model_validate(manifest("fashion", VALID_SPEC))
    assert service.spec.source.artifact is not None and service.spec.source.training_job is None
    assert (service.spec.triton.replicas, service.spec.triton.instances) == (2, 2)
    minimal = GANInferenceService.model_validate(manifest("fashion", MINIMAL_SPEC)).spec
    assert minimal.source.training_job == "fashion-mnist-dcgan" and minimal.model_name is None


def test_defaults() -> None:
    spec = GANInferenceServiceSpec.model_validate(MINIMAL_SPEC)
    assert spec.triton == TritonSpec(
        image=None, replicas=1, cpu="1", memory="2Gi", max_batch_size=64, max_queue_delay_microseconds=2000,
        instances=1, threads=1,
    )
    assert spec.rollout == RolloutPolicy() and spec.rollout.steps == [10, 50, 100]
    assert spec.to_wire()["rollout"] == {
        "strategy": "canary", "steps": [10, 50, 100], "approval": "auto", "failureLimit": 0, "inconclusiveLimit": 0,
        "gates": {
            "quality": {"sampleSize": 1000, "kidMargin": DEFAULT_KID_MARGIN, "confidence": 0.95,
                        "bootstrapResamples": 500, "featureExtractor": None, "maxKid": None, "maxFd": None,
                        "maxFdRegression": None, "minPrecision": None, "minRecall": None, "minDiversityRatio": 0.5},
            "serving": {"durationSeconds": 10, "concurrency": 2, "batchSize": 1, "p95LatencyMs": 100.0,
                        "maxErrorRate": 0.0},
        },
    }


@pytest.mark.parametrize("case", INVALID_GIS_SPECS, ids=[case.id for case in INVALID_GIS_SPECS])
def test_invalid_specs_are_rejected_by_pydantic(case: InvalidGisSpec) -> None:
    with pytest.raises(ValidationError) as info:
        GANInferenceService.model_validate(case.manifest())
    for field in case.fields:
        assert field in str(info.value)


ARTIFACT = ArtifactRef(uri="pvc://models/fashion/r0123456789", sha256=MANIFEST_SHA256)


@pytest.mark.parametrize(
    "fields",
    [{}, {"training_job": "fashion", "artifact": ARTIFACT}],
    ids=["neither", "both"],
)
def test_exactly_one_source(fields: dict[str, Any]) -> None:
    message = "exactly one of spec.source.trainingJob and spec.source.artifact"
    with pytest.raises(ValidationError, match=re.escape(message)):
        ModelSource(**fields)
    assert ModelSource(training_job="fashion").artifact is None
    assert ModelSource(artifact=ARTIFACT).training_job is None


@pytest.mark.parametrize(
    ("uri", "ok"),
    [
        ("pvc://models/fashion/r0123456789", True),
        ("pvc://models", True),
        ("pvc://models.v2/fashion", True),
        ("pvc://models/fashion/r0123456789\n", False),
        ("pvc://Bad_Claim/x", False),
        ("pvc://-claim/x", False),
        ("pvc:///fashion", False),
        ("file:///models/fashion", False),
        ("/models/fashion", False),
        ("s3://bucket/fashion", False),
        ("", False),
    ],
)
def test_artifact_uri_is_a_pvc_uri(uri: str, ok: bool) -> None:
    try:
        ArtifactRef(uri=uri, sha256=MANIFEST_SHA256)
    except ValidationError as error:
        assert not ok and "must be a pvc://claim/path URI" in str(error)
    else:
        assert ok


@pytest.mark.parametrize(
    "sha256", [MANIFEST_SHA256[:63], MANIFEST_SHA256 + "0", MANIFEST_SHA256.upper(), "g" * 64, MANIFEST_SHA256 + "\n"]
)
def test_bad_sha256(sha256: str) -> None:
    with pytest.raises(ValidationError, match="sha256"):
        ArtifactRef(uri="pvc://models/fashion", sha256=sha256)


@pytest.mark.parametrize(("model_name", "ok"), [
    ("fashion", True), ("Fashion_GAN-2", True), ("m" * 64, True),
    ("m" * 65, False), ("", False), ("fashion.gen", False), ("fashion gen", False), ("fashion/gen", False),
])
def test_model_name(model_name: str, ok: bool) -> None:
    spec = {**MINIMAL_SPEC, "modelName": model_name}
    if ok:
        assert GANInferenceServiceSpec.model_validate(spec).model_name == model_name
    else:
        with pytest.raises(ValidationError, match="modelName"):
            GANInferenceServiceSpec.model_validate(spec)


def test_the_name_is_a_service_name_and_serves_as_the_model_name_unless_one_is_given() -> None:
    # Every Service name (a DNS-1035 label) is also a Triton model name.
    assert re.fullmatch(MODEL_NAME_PATTERN, "fashion-gen-2")
    with pytest.raises(ValidationError, match=re.escape("metadata.name")):
        GANInferenceService.model_validate(manifest("fashion.gen", {**MINIMAL_SPEC, "modelName": "fashion"}))
    named = GANInferenceService.model_validate(manifest("fashion-gen", {**MINIMAL_SPEC, "modelName": "fashion"}))
    assert named.spec.model_name == "fashion"


def test_name_length() -> None:
    GANInferenceService.model_validate(manifest("n" * MAX_SERVICE_NAME_LENGTH, MINIMAL_SPEC))
    with pytest.raises(ValidationError, match=re.escape("metadata.name")):
        GANInferenceService.model_validate(manifest("n" * (MAX_SERVICE_NAME_LENGTH + 1), MINIMAL_SPEC))


def test_revision_name() -> None:
    name = revision_name(MANIFEST_SHA256)
    assert name == "r0123456789" and re.fullmatch(REVISION_PATTERN, name)
    # The longest Deployment/Service name the operator derives is still a DNS label.
    assert len(f"{'n' * MAX_SERVICE_NAME_LENGTH}-{name}") <= 63
    with pytest.raises(ValueError, match="sha256"):
        revision_name("0123")


STATUS: dict[str, Any] = {
    "observedGeneration": 3,
    "phase": "Progressing",
    "modelName": "fashion",
    "stableRevision": "r0123456789",
    "canaryRevision": "rabcdefabcd",
    "canaryWeight": 10,
    "endpoint": "http://fashion.models.svc:8000",
    "revisions": [
        {"name": "r0123456789", "uri": "pvc://models/fashion/r0123456789", "sha256": MANIFEST_SHA256,
         "source": "GANTrainingJob fashion-mnist-dcgan at 12.8 kimg", "state": "Ready", "replicas": 2,
         "readyReplicas": 2, "createdTime": "2025-01-01T00:00:00Z"},
        {"name": "rabcdefabcd", "uri": "pvc://models/fashion/rabcdefabcd", "sha256": "abcdef" + "0" * 58,
         "source": "GANTrainingJob fashion-mnist-dcgan at 25.6 kimg", "state": "Loading", "replicas": 1},
    ],
    "conditions": [
        {"type": "Ready", "status": "True", "reason": "StableServing", "lastTransitionTime": "2025-01-01T00:00:00Z",
         "observedGeneration": 3},
        {"type": "Progressing", "status": "True", "reason": "CanaryStep", "message": "step 1 of 3 (10%)",
         "lastTransitionTime": "2025-01-01T00:01:00Z"},
    ],
}


def test_status_round_trips() -> None:
    status = GANInferenceServiceStatus.model_validate(STATUS)
    assert status.revisions[1] == RevisionStatus(
        name="rabcdefabcd", uri="pvc://models/fashion/rabcdefabcd", sha256="abcdef" + "0" * 58,
        source="GANTrainingJob fashion-mnist-dcgan at 25.6 kimg", state="Loading", replicas=1,
    )
    assert status.conditions[0].observed_generation == 3
    assert GANInferenceServiceStatus.model_validate(status.to_wire()) == status


def test_status_written_by_a_newer_operator_is_read() -> None:
    newer = {
        **STATUS,
        "shadowRevision": "r9999999999",
        "revisions": [{**STATUS["revisions"][0], "acceleratorType": "cpu"}],
        "conditions": [{**STATUS["conditions"][0], "severity": "Info"}],
    }
    status = GANInferenceServiceStatus.model_validate(newer)
    assert status.stable_revision == "r0123456789" and status.revisions[0].state == "Ready"
    assert status.conditions[0].type == "Ready"
    # Only status is lenient: the spec a user writes still rejects what it does not know.
    with pytest.raises(ValidationError, match=re.escape("triton.bogus")):
        GANInferenceServiceSpec.model_validate({**MINIMAL_SPEC, "triton": {"bogus": 1}})


def test_conditions_share_their_fields() -> None:
    assert list(Condition.model_fields) == ["type", "status", "reason", "message", "last_transition_time"]
    assert list(ServiceCondition.model_fields) == [*Condition.model_fields, "observed_generation"]
    with pytest.raises(ValidationError, match="type"):
        ServiceCondition(type="Running", status="True", reason="X", last_transition_time="t")  # type: ignore[arg-type]
    # A field a newer operator writes is ignored, not an error (status is read back by older ones).
    read = Condition.model_validate({"type": "Running", "status": "True", "reason": "X", "lastTransitionTime": "t",
                                     "observedGeneration": 1})
    assert "observedGeneration" not in read.to_wire()


def test_the_job_rollout_is_the_policy_plus_a_service() -> None:
    assert set(RolloutSpec.model_fields) == {*RolloutPolicy.model_fields, "service"}
    with pytest.raises(ValidationError, match="end at 100"):
        RolloutPolicy(steps=[10, 50])
    with pytest.raises(ValidationError, match="end at 100"):
        RolloutSpec(service="fashion", steps=[10, 50])
