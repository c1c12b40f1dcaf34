"""Which GANTrainingJob spec fields are fixed for the life of a job: one list, read by the CRD
(immutability rules, so an edit is refused at apply naming the field) and by the trainer (the
resume fingerprint, so a checkpoint resumes only under the values it was made with).

Everything not listed may change mid-run. The operator's own fields (OPERATOR_FIELDS: backoffLimit,
suspend, deadlines, export, rollout, ...) apply at once; the rest (totalKimg, evaluation, report
and checkpoint cadence, cpu/memory) reach the trainer with the next gang, and the job's
SpecApplied condition says whether the running gang has them.
"""

from __future__ import annotations

from typing import Any

# Fields that change what the run computes: spec section -> its keys (None: the whole section).
TRAJECTORY_FIELDS: dict[str, tuple[str, ...] | None] = {
    "dataset": None,
    "model": None,
    "training": ("batchSize", "dStepsPerG", "precision", "seed", "optimizer", "channelsLast", "compile",
                 "deterministic", "augment"),
    "resources": ("workers", "processesPerWorker"),
}

# Trajectory fields added after jobs were made with their section: hashed only when they differ
# from the value that reproduces the older behaviour, so a checkpoint from before they existed keeps
# its fingerprint and resumes. This is how a new field joins the fingerprint.
# (dotted path under spec -> that value)
ADDED_LATER: dict[str, Any] = {"training.augment.probability": None, "training.augment.adaptive": None}

ANY_VALUE = object()  # the field existed but that fingerprint left it out: every value matches

# Fields that joined the fingerprint without ADDED_LATER, so trainers before each step wrote other
# fingerprints; a checkpoint with one of those still resumes while the spec holds the values that
# fingerprint implied. Oldest first; each step: the fields it added -> that value.
EARLIER_FINGERPRINTS: tuple[dict[str, Any], ...] = (
    # Until compile, deterministic and lazy R1 (2026-12-03): compile was never hashed.
    {"training.compile": ANY_VALUE, "training.deterministic": False, "model.regularization.r1Interval": 1},
    # Until several processes per worker.
    {"resources.processesPerWorker": None},
    # Until augmentation.
    {"training.augment": {"policy": [], "xflip": False}},
)

# Also fixed, though not part of the computation: how many processes write the checkpoints, and
# where they are (a new location would silently start over).
PLACEMENT_FIELDS = ("spec.resources.gpusPerWorker", "spec.checkpoint.uri")


def immutable_paths() -> tuple[str, ...]:
    """Every fixed field as a `spec.<section>[.<key>]` path."""
    paths = []
    for section, keys in TRAJECTORY_FIELDS.items():
        paths += [f"spec.{section}"] if keys is None else [f"spec.{section}.{key}" for key in keys]
    return (*paths, *PLACEMENT_FIELDS)


# Read by the operator on every pass, never by a running trainer: an edit applies at once.
OPERATOR_FIELDS = ("backoffLimit", "maxPreemptions", "suspend", "activeDeadlineSeconds", "launchTimeoutSeconds",
                   "ttlSecondsAfterFinished", "export", "rollout")


def trainer_view(spec_wire: dict[str, Any]) -> dict[str, Any]:
    """The spec as a running gang sees it: without the operator's fields (and whether the
    checkpoint claim is kept, which only the finalizer reads)."""
    view = {key: value for key, value in spec_wire.items() if key not in OPERATOR_FIELDS}
    if isinstance(view.get("checkpoint"), dict):
        view["checkpoint"] = {key: value for key, value in view["checkpoint"].items() if key != "retain"}
    return view
