"""Rank 0 reports progress on its GANTrainingJob's status from inside the pod.

The operator sets GANFORGE_JOB_NAME / GANFORGE_JOB_NAMESPACE on the workers and grants the pod's
ServiceAccount `get` and `patch` on `gantrainingjobs/status` of that one job, nothing more. The
reporter finds the apiserver the way in-cluster clients do (KUBERNETES_SERVICE_HOST/PORT and the
mounted ServiceAccount token and CA) and sends JSON merge patches of `status.progress`,
`status.checkpoint` and `status.metrics`.

Only the standard library is used, so the trainer image needs no Kubernetes client. Reporting is
a side channel: requests run on one background thread, a newer event replaces one not yet sent,
progress goes at most every MIN_REPORT_INTERVAL_SECONDS, and failures are counted and logged,
never raised into the training loop. Only a terminal event
(finished, preempted, failed) makes the caller wait, briefly, so the final status lands before the
process exits.
"""

from __future__ import annotations

import json
import logging
import math
import os
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ganforge.api import trainer_env
from ganforge.api.training_job import API_VERSION, PLURAL, CheckpointStatus, TrainingProgress
from ganforge.trainer.checkpoint import CheckpointInfo
from ganforge.trainer.outputs import ProgressEvent

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TERMINAL_STATES = frozenset({"finished", "preempted", "failed"})
# A busy apiserver can take seconds to answer; a report that times out is lost, not retried.
REQUEST_TIMEOUT_SECONDS = 10.0
# Bounded well inside the preemption deadline, which must also fit the emergency checkpoint.
TERMINAL_WAIT_SECONDS = 10.0
FAILURE_LOG_INTERVAL_SECONDS = 60.0
# Progress is sent at most this often per job (the newest report replaces those in between), so
# hundreds of running jobs do not turn into hundreds of status writes a second. Terminal reports,
# and any the caller flushes, go at once. The operator's trainerEnv can set STATUS_INTERVAL.
MIN_REPORT_INTERVAL_SECONDS = 10.0


# -- what is sent ---------------------------------------------------------------------------------


def status_path(namespace: str, name: str) -> str:
    quoted = urllib.parse.quote
    return f"/apis/{API_VERSION}/namespaces/{quoted(namespace, safe='')}/{PLURAL}/{quoted(name, safe='')}/status"


def checkpoint_status(info: CheckpointInfo) -> CheckpointStatus:
    return CheckpointStatus(uri=info.uri, kimg=info.kimg, step=info.step, sha256=info.manifest_sha256,
                            time=info.created)


def status_patch(event: ProgressEvent) -> dict[str, Any]:
    """The merge patch for one event.

    `progress` is sent whole: a null resume point deletes a previous gang's, since this gang
    started fresh. `checkpoint` and `metrics` are left out until there is one, so a gang that has
    not written or evaluated yet keeps what earlier gangs reported. Non-finite metrics are left
    out too: JSON cannot carry them.
    """
    progress = TrainingProgress(
        kimg=event.kimg, step=event.step, images_per_second=event.images_per_second, total_kimg=event.total_kimg,
        resumed_from_kimg=event.resumed_from_kimg, resumed_from_step=event.resumed_from_step,
    )
    status: dict[str, Any] = {"progress": progress.to_wire()}
    if event.checkpoint is not None:
        status["checkpoint"] = checkpoint_status(event.checkpoint).to_wire()
    metrics = {name: value for name, value in event.metrics.items() if math.isfinite(value)}
    if metrics:
        status["metrics"] = metrics
    return {"status": status}


def _describe(error: Exception) -> str:
    if isinstance(error, urllib.error.HTTPError):
        # The apiserver explains itself in a Status object; its message beats the reason phrase.
        try:
            detail = json.loads(error.read() or b"{}").get("message") or error.reason
        except (ValueError, OSError):
            detail = error.reason
        return f"HTTP {error.code}: {detail}"
    if isinstance(error, urllib.error.URLError):
        return f"cannot reach the apiserver: {error.reason}"
    return f"{type(error).__name__}: {error}"


# -- the reporter ---------------------------------------------------------------------------------


class JobStatusReporter:
    """A ProgressHook that PATCHes the job's status subresource; call `close()` when training ends."""

    def __init__(
        self, server: str, namespace: str, name: str, token_path: Path, ca_path: Path | None,
        request_timeout: float = REQUEST_TIMEOUT_SECONDS, terminal_wait: float = TERMINAL_WAIT_SECONDS,
        min_interval: float = MIN_REPORT_INTERVAL_SECONDS,
    ) -> None:
        self.url = server.rstrip("/") + status_path(namespace, name)
        self.job = f"{namespace}/{name}"
        self.token_path = token_path
        self.request_timeout = request_timeout
        self.terminal_wait = terminal_wait
        self.min_interval = min_interval
        self._tls = ssl.create_default_context(cafile=str(ca_path) if ca_path is not None else None)
        self._changed = threading.Condition()
        self._pending: ProgressEvent | None = None
        self._queued = 0  # events handed in
        self._settled = 0  # events sent, failed or replaced by a newer one
        self._closed = False
        self._hurry = False  # a flush is waiting: send now, whatever the interval
        self._next_send = -math.inf
        self.sent = 0
        self.failures = 0
        self.coalesced = 0
        self.last_error: str | None = None
        self._failures_in_a_row = 0
        self._last_failure_log = -math.inf
        self._unlogged_failures = 0
        self._worker = threading.Thread(target=self._work, name="job-status-reporter", daemon=True)
        self._worker.start()

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> JobStatusReporter | None:
        """The reporter for the job named in the environment, or None outside a job's pod."""
        env = os.environ if environ is None else environ
        name, namespace = env.get(trainer_env.JOB_NAME), env.get(trainer_env.JOB_NAMESPACE)
        if not name or not namespace:
            return None
        host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
        token, ca = SERVICE_ACCOUNT_DIR / "token", SERVICE_ACCOUNT_DIR / "ca.crt"
        if not host or not port or not token.is_file():
            log.info("job status reporting off: %s=%s is set but this is not a Kubernetes pod "
                     "(no KUBERNETES_SERVICE_HOST/PORT or no %s)", trainer_env.JOB_NAME, name, token)
            return None
        server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        interval = env.get(trainer_env.STATUS_INTERVAL) or str(MIN_REPORT_INTERVAL_SECONDS)
        try:
            min_interval = float(interval)
        except ValueError:
            raise ValueError(f"{trainer_env.STATUS_INTERVAL}={interval!r}: expected seconds as a number") from None
        # Like client-go's in-cluster config: without the CA file, the system's roots are tried.
        reporter = cls(server, namespace, name, token, ca if ca.is_file() else None, min_interval=min_interval)
        log.info("reporting progress to the status of GANTrainingJob %s", reporter.job)
        return reporter

    # -- the hook ---------------------------------------------------------------------------

    def __call__(self, event: ProgressEvent) -> None:
        with self._changed:
            if self._closed:
                return
            if self._pending is not None:
                self.coalesced += 1
                self._settled += 1
            self._pending = event
            self._queued += 1
            self._changed.notify_all()
        if event.state in TERMINAL_STATES and not self.flush(self.terminal_wait):
            log.warning("the %s status of %s was not confirmed within %.0fs; training ends anyway",
                        event.state, self.job, self.terminal_wait)

    def flush(self, timeout: float) -> bool:
        """Wait until every event handed in so far was sent (or failed); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            target = self._queued
            self._hurry = True
            self._changed.notify_all()
            while self._settled < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def close(self, timeout: float = TERMINAL_WAIT_SECONDS) -> None:
        """Send what is still pending (waiting at most `timeout`), then stop the thread."""
        with self._changed:
            if self._closed:
                return
            self._closed = True
            self._changed.notify_all()
        self._worker.join(timeout)
        if self._worker.is_alive():
            log.warning("job status: a request to %s was still running after %.0fs; not waiting for it",
                        self.job, timeout)
        if self.failures:
            log.warning("job status: %d of %d reports to %s failed; last error: %s", self.failures,
                        self.sent + self.failures, self.job, self.last_error)

    # -- the background thread ----------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._changed:
                while (wait := self._wait_before_sending()) > 0:
                    self._changed.wait(None if wait == math.inf else wait)
                event, self._pending = self._pending, None
                self._hurry = False
            if event is None:
                return
            self._deliver(event)
            self._next_send = time.monotonic() + self.min_interval
            with self._changed:
                self._settled += 1
                self._changed.notify_all()

    def _wait_before_sending(self) -> float:
        """Seconds until the pending event may go (inf: none pending); 0 when closing."""
        if self._closed:
            return 0.0
        if self._pending is None:
            return math.inf
        if self._hurry or self._pending.state in TERMINAL_STATES:
            return 0.0
        return max(0.0, self._next_send - time.monotonic())

    def _deliver(self, event: ProgressEvent) -> None:
        try:
            self._patch(status_patch(event))
        except Exception as error:  # whatever goes wrong, training carries on
            self._failed(_describe(error))
            return
        self.sent += 1
        if self._failures_in_a_row:
            log.info("job status: reporting to %s works again after %d failures", self.job, self._failures_in_a_row)
        self._failures_in_a_row = 0

    def _patch(self, body: dict[str, Any]) -> None:
        # Projected ServiceAccount tokens are rotated by the kubelet: read the current one each time.
        token = self.token_path.read_text().strip()
        request = urllib.request.Request(
            self.url, data=json.dumps(body, allow_nan=False).encode(), method="PATCH",
            headers={"Content-Type": "application/merge-patch+json", "Accept": "application/json",
                     "Authorization": f"Bearer {token}", "User-Agent": "ganforge-trainer"},
        )
        with urllib.request.urlopen(request, timeout=self.request_timeout, context=self._tls) as response:
            response.read()

    def _failed(self, what: str) -> None:
        self.failures += 1
        self._failures_in_a_row += 1
        self.last_error = what
        now = time.monotonic()
        if now - self._last_failure_log < FAILURE_LOG_INTERVAL_SECONDS:
            self._unlogged_failures += 1
            return
        suppressed = f" ({self._unlogged_failures} more since the last message)" if self._unlogged_failures else ""
        log.warning("job status: reporting to %s failed%s: %s", self.job, suppressed, what)
        self._last_failure_log, self._unlogged_failures = now, 0
