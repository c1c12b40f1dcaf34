"""Which GANTrainingJob spec fields are fixed for the life of a job: one list, read by the CRD
(immutability rules, so an edit is refused at apply naming the field) and by the trainer (the
resume fingerprint, so a checkpoint resumes only under the values it was made with).

Everything not listed may change mid-run (totalKimg, backoffLimit, evaluation, rollout, report
and checkpoint cadence, cpu/memory); the next gang starts with the new values.
"""

from __future__ import annotations

# Fields that change what the run computes: spec section -> its keys (None: the whole section).
TRAJECTORY_FIELDS: dict[str, tuple[str, ...] | None] = {
    "dataset": None,
    "model": None,
    "training": ("batchSize", "dStepsPerG", "precision", "seed", "optimizer", "channelsLast"),
    "resources": ("workers",),
}

# Also fixed, though not part of the computation: how many processes write the checkpoints, and
# where they are (a new location would silently start over).
PLACEMENT_FIELDS = ("spec.resources.gpusPerWorker", "spec.checkpoint.uri")


def immutable_paths() -> tuple[str, ...]:
    """Every fixed field as a `spec.<section>[.<key>]` path."""
    paths = []
    for section, keys in TRAJECTORY_FIELDS.items():
        paths += [f"spec.{section}"] if keys is None else [f"spec.{section}.{key}" for key in keys]
    return (*paths, *PLACEMENT_FIELDS)
