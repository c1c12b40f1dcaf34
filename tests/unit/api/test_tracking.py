"""The job's identity in MLflow and its spec as parameters (no MLflow needed)."""

from __future__ import annotations

from ganforge.api.tracking import TrackingRun, flatten, run_key


def test_a_job_is_keyed_by_uid_then_name_then_run_directory() -> None:
    assert run_key("team", "fashion", "uid-1", "/runs/x") == "uid-1"
    assert run_key("team", "fashion", "", "/runs/x") == "team/fashion"
    assert run_key("", "", "", "/runs/x") == "/runs/x"


def test_a_spec_flattens_to_dotted_string_parameters() -> None:
    assert flatten({"training": {"batchSize": 64, "optimizer": {"betas": [0.5, 0.999]}}, "suspend": False}) == {
        "training.batchSize": "64", "training.optimizer.betas": "[0.5, 0.999]", "suspend": "False"}


def test_nothing_is_tracked_without_a_tracking_uri() -> None:
    assert TrackingRun.open("uid-1", "fashion", environ={}) is None
