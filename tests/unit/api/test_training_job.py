"""The GANTrainingJob models, as the operator reads them back."""

from __future__ import annotations

from ganforge.api.training_job import GANTrainingJobStatus


def test_a_status_written_by_a_newer_operator_still_parses() -> None:
    """Status is read back by the operator: a field it does not know (from a newer version, at any
    depth) is ignored rather than stalling every reconcile of the job."""
    status = GANTrainingJobStatus.model_validate({
        "phase": "Running", "gang": 2, "suspendedAt": "2026-01-01T00:00:00Z",
        "workers": {"ready": 2, "total": 2, "pending": 0},
        "lastFailure": {"reason": "OOMKilled", "time": "t", "node": "gpu-7"},
        "conditions": [{"type": "Running", "status": "True", "reason": "X", "lastTransitionTime": "t",
                        "observedGeneration": 3}],
        "progress": {"kimg": 1.5, "stepsPerSecond": 3.0},
    })
    assert status.gang == 2 and status.workers is not None and status.workers.total == 2
    assert "suspendedAt" not in status.to_wire()
