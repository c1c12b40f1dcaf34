"""Experiment tracking in MLflow, for the trainer and the export alike.

Set MLFLOW_TRACKING_URI (and optionally MLFLOW_EXPERIMENT_NAME; default "ganforge") in the trainer
pods' environment (the chart's trainerEnv) and every job gets one MLflow run: the first gang
creates it, tagged with the job's identity, and every later gang finds it by that tag and appends,
so a job preempted ten times is still one run with one metric history, by global step (images
shown). The export registers the exported model as a version of a registered model named after the
job, its source the served revision's URI. Without the variable nothing is imported or sent.

mlflow itself is imported only here and only when the variable is set (`ganforge[mlflow]`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

TRACKING_URI = "MLFLOW_TRACKING_URI"
EXPERIMENT_NAME = "MLFLOW_EXPERIMENT_NAME"
DEFAULT_EXPERIMENT = "ganforge"
RUN_KEY_TAG = "ganforge.job"


class TrackingUnavailable(Exception):
    """MLFLOW_TRACKING_URI is set but mlflow is not installed: a configuration error."""


def run_key(namespace: str, name: str, uid: str, fallback: str) -> str:
    """What identifies a job's run across gangs: its uid when it has one (a job deleted and created
    again under the same name is a new run), else namespace/name, else `fallback` (a local run dir)."""
    if uid:
        return uid
    return f"{namespace}/{name}" if name else fallback


def flatten(document: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested spec as MLflow parameters: dotted keys, values as strings (MLflow's limit: 6000)."""
    out: dict[str, str] = {}
    for key, value in document.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{path}."))
        else:
            out[path] = str(value)[:6000]
    return out


class TrackingRun:
    """One job's MLflow run. Every method logs a warning instead of raising: tracking is a side
    channel and must never stop training or an export. After a failure the run sends nothing more
    from this process: the client retries with backoff, and a server that went away would otherwise
    stall every report."""

    def __init__(self, client: Any, run_id: str) -> None:
        self.client, self.run_id = client, run_id
        self.broken = False

    @classmethod
    def open(cls, key: str, run_name: str, params: Mapping[str, str] | None = None,
             environ: Mapping[str, str] = os.environ) -> TrackingRun | None:
        """The job's run, created on first use; None when tracking is not configured, or (with a
        warning) when the server cannot be reached: training goes on without it."""
        uri = environ.get(TRACKING_URI)
        if not uri:
            return None
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as error:
            raise TrackingUnavailable(f"{TRACKING_URI} is set but mlflow is not installed (ganforge[mlflow]): "
                                      f"{error}") from None
        try:
            client = MlflowClient(tracking_uri=uri)
            experiment_name = environ.get(EXPERIMENT_NAME) or DEFAULT_EXPERIMENT
            experiment = client.get_experiment_by_name(experiment_name)
            experiment_id = experiment.experiment_id if experiment else client.create_experiment(experiment_name)
            found = client.search_runs([experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{key}'",
                                       max_results=1)
            if found:
                run_id = found[0].info.run_id
                client.update_run(run_id, status="RUNNING")
                log.info("MLflow: appending to run %s of %s (%s)", run_id, key, uri)
            else:
                run_id = client.create_run(experiment_id, run_name=run_name, tags={RUN_KEY_TAG: key}).info.run_id
                if params:
                    from mlflow.entities import Param

                    items = [Param(k, v) for k, v in params.items()]
                    for start in range(0, len(items), 100):  # MLflow's batch limit
                        client.log_batch(run_id, params=items[start : start + 100])
                log.info("MLflow: created run %s for %s (%s)", run_id, key, uri)
        except Exception as error:
            log.warning("MLflow at %s is unavailable, this process tracks nothing: %s", uri, error)
            return None
        return cls(client, run_id)

    def metrics(self, values: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, step) for key, value in values.items()]
        self._guarded("logging metrics", lambda: self.client.log_batch(self.run_id, metrics=batch))

    def tag(self, key: str, value: str) -> None:
        self._guarded("tagging the run", lambda: self.client.set_tag(self.run_id, key, value))

    def end(self, status: str) -> None:
        """FINISHED or FAILED; a preempted job's run stays RUNNING for its next gang."""
        self._guarded("ending the run", lambda: self.client.set_terminated(self.run_id, status=status))

    def register_model(self, name: str, source: str, tags: Mapping[str, str]) -> str | None:
        """A new version of registered model `name` pointing at `source`; its version number."""
        from mlflow.exceptions import MlflowException

        def register() -> str:
            try:
                self.client.create_registered_model(name)
            except MlflowException as error:  # it exists: add a version
                if "already exists" not in str(error).lower() and "RESOURCE_ALREADY_EXISTS" not in str(error):
                    raise
            version = self.client.create_model_version(name, source=source, run_id=self.run_id, tags=dict(tags))
            return str(version.version)

        result: str | None = self._guarded("registering the model", register)
        return result

    def _guarded(self, what: str, action: Any) -> Any:
        if self.broken:
            return None
        try:
            return action()
        except Exception as error:
            self.broken = True
            log.warning("MLflow: %s failed, tracking stops for this process: %s", what, error)
            return None
