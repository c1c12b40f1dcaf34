"""A job with spec.rollout after its export: hand the revision to its GANInferenceService and
follow that service's rollout to an outcome. Pure: (job, the service as read) -> a decision.

The job creates the service when it does not exist (its source: this job) and points an existing
one at itself; the service then rolls the new revision out against its stable one. The job is
Succeeded once the service made its revision stable, and Failed (reason RolledBack) when the
service rolled it back or could not load it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ganforge.api.inference_service import GANInferenceServiceStatus
from ganforge.api.training_job import GANTrainingJobSpec, JobRolloutStatus
from ganforge.operator import serving_children
from ganforge.operator.children import JobRef


@dataclass
class JobRolloutDecision:
    rollout: JobRolloutStatus
    write: dict[str, Any] | None = None  # the service to create, or the patch that points it at the job
    outcome: Literal["promoted", "rolled back"] | None = None


def follow(job: JobRef, spec: GANTrainingJobSpec, revision: str,
           service: Mapping[str, Any] | None) -> JobRolloutDecision:
    assert spec.rollout is not None
    name = spec.rollout.service

    def waiting(message: str, write: dict[str, Any] | None = None) -> JobRolloutDecision:
        return JobRolloutDecision(JobRolloutStatus(service=name, revision=revision, phase="Waiting", message=message),
                                  write)

    if service is None:
        return waiting(f"creating GANInferenceService {name}", serving_children.inference_service_for_job(job, spec))
    source = (service.get("spec") or {}).get("source") or {}
    if source.get("trainingJob") != job.name:
        return waiting(f"pointing GANInferenceService {name} at this job",
                       serving_children.retarget_inference_service(job, name))
    status = GANInferenceServiceStatus.model_validate(service.get("status") or {})
    if status.stable_revision == revision:
        how = status.rollout.message if status.rollout and status.rollout.revision == revision else "the first revision"
        return JobRolloutDecision(JobRolloutStatus(service=name, revision=revision, phase="Promoted",
                                                   message=f"stable in {name}: {how}"), outcome="promoted")
    record = next((r for r in status.revisions if r.name == revision), None)
    rollout = status.rollout if status.rollout and status.rollout.revision == revision else None
    if record is not None and record.state == "Failed":
        why = rollout.message if rollout and rollout.phase == "RolledBack" else record.message
        return JobRolloutDecision(JobRolloutStatus(service=name, revision=revision, phase="RolledBack",
                                                   message=f"{name} rolled it back: {why}"), outcome="rolled back")
    if rollout is not None and rollout.phase not in ("Promoted", "RolledBack"):
        return JobRolloutDecision(JobRolloutStatus(service=name, revision=revision, phase=rollout.phase,
                                                   message=rollout.message))
    state = f"revision {revision} {record.state.lower()}" if record else f"waiting for {name} to pick up {revision}"
    return waiting(state)
