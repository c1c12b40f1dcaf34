"""A job with spec.rollout after its export, without a cluster: it creates (or points) its
GANInferenceService and follows the service's rollout to Succeeded or to a RolledBack failure."""

from __future__ import annotations

import json
from typing import Any

from ganforge.api.training_job import GANTrainingJobSpec, GANTrainingJobStatus
from ganforge.operator.reconcile import Observed, Plan, reconcile
from tests.unit.operator.test_reconcile import ARTIFACT, JOB, NOW, SETTINGS, export_pod, exporting, spec

REVISION = ARTIFACT["revision"]


def rollout_spec() -> GANTrainingJobSpec:
    wire = spec().to_wire()
    wire["rollout"] = {"service": "fashion", "approval": "manual", "gates": {"quality": {"sampleSize": 500}}}
    return GANTrainingJobSpec.model_validate(wire)


def rolling_out(**fields: Any) -> GANTrainingJobStatus:
    return exporting(phase="RollingOut", artifact=ARTIFACT, exportAttempts=1, **fields)


def run(status: GANTrainingJobStatus, service: dict[str, Any] | None,
        pods: list[dict[str, Any]] | None = None) -> tuple[Plan, GANTrainingJobStatus]:
    plan = reconcile(JOB, rollout_spec(), status, 1, Observed(pods or [], {"ondemand-1"}, NOW, service), SETTINGS)
    return plan, GANTrainingJobStatus.model_validate(status.to_wire() | (plan.status or {}))


def service(source: str = "gan", **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "fashion"}, "spec": {"source": {"trainingJob": source}}, "status": status}


def test_an_export_with_a_rollout_goes_rolling_out_not_succeeded() -> None:
    plan = reconcile(JOB, rollout_spec(), exporting(exportAttempts=1), 1,
                     Observed([export_pod(1, "Succeeded", 0, json.dumps(ARTIFACT))], {"ondemand-1"}, NOW), SETTINGS)
    status = GANTrainingJobStatus.model_validate(exporting().to_wire() | (plan.status or {}))
    assert status.phase == "RollingOut" and "RollingOut" in [e.reason for e in plan.events]
    assert not any(c.type == "Succeeded" for c in status.conditions)


def test_a_missing_service_is_created_from_the_job_and_outlives_it() -> None:
    plan, status = run(rolling_out(), None)
    [created] = plan.apply
    assert created["kind"] == "GANInferenceService" and created["metadata"]["name"] == "fashion"
    assert "ownerReferences" not in created["metadata"]
    assert created["spec"]["source"] == {"trainingJob": "gan"}
    assert created["spec"]["rollout"]["approval"] == "manual" and "service" not in created["spec"]["rollout"]
    assert created["spec"]["rollout"]["gates"]["quality"]["sampleSize"] == 500
    assert status.phase == "RollingOut" and status.rollout is not None and status.rollout.phase == "Waiting"


def test_a_service_of_another_job_is_pointed_at_this_one() -> None:
    plan, _ = run(rolling_out(), service(source="older-job"))
    [patch] = plan.apply
    assert patch["spec"] == {"source": {"trainingJob": "gan", "artifact": None}}  # a merge patch: nothing else


def test_the_services_rollout_is_followed_to_promotion() -> None:
    progressing = {"revision": REVISION, "fromRevision": "r1111111111", "strategy": "canary",
                   "phase": "AwaitingApproval", "message": "waiting for ganforge.io/promote"}
    plan, status = run(rolling_out(), service(stableRevision="r1111111111", rollout=progressing))
    assert status.phase == "RollingOut" and status.rollout is not None
    assert status.rollout.phase == "AwaitingApproval" and not plan.apply

    promoted = {**progressing, "phase": "Promoted", "message": "every analysis passed (kidIncrease 0.01)"}
    plan, status = run(status, service(stableRevision=REVISION, rollout=promoted))
    assert status.phase == "Succeeded" and status.completion_time is not None
    conditions = {c.type: c for c in status.conditions}
    assert conditions["RolledOut"].status == "True" and "kidIncrease 0.01" in conditions["RolledOut"].message


def test_a_rolled_back_revision_fails_the_job_with_the_reason() -> None:
    rolled_back = {"revision": REVISION, "fromRevision": "r1111111111", "strategy": "canary",
                   "phase": "RolledBack", "message": "analysis failed: kidIncrease 0.24 (bound 0.1): Fail"}
    revisions = [{"name": REVISION, "uri": ARTIFACT["uri"], "sha256": ARTIFACT["sha256"], "source": "gan",
                  "state": "Failed", "message": "rolled back"}]
    plan, status = run(rolling_out(), service(stableRevision="r1111111111", rollout=rolled_back, revisions=revisions))
    assert status.phase == "Failed"
    failed = next(c for c in status.conditions if c.type == "Failed")
    assert failed.reason == "RolledBack" and "kidIncrease 0.24" in failed.message
    assert "RolledBack" in [e.reason for e in plan.events]
