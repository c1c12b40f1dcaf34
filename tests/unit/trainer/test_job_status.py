"""What the trainer sends to its GANTrainingJob's status, and that reporting never holds training up."""

from __future__ import annotations

import http.server
import json
import logging
import threading
import time
from pathlib import Path

import pytest

from ganforge.api import trainer_env
from ganforge.api.training_job import GANTrainingJobStatus
from ganforge.local.control_plane import free_port
from ganforge.trainer import job_status
from ganforge.trainer.checkpoint import CheckpointInfo
from ganforge.trainer.job_status import JobStatusReporter, status_patch, status_path
from ganforge.trainer.outputs import FileProgressHook, ProgressEvent

CHECKPOINT = CheckpointInfo(name="ckpt-000000001280", uri="pvc://ckpt/jobs/a/ckpt-000000001280", nimg=1280, step=80,
                            manifest_sha256="cd" * 32, created="2025-01-02T03:04:05+00:00", write_seconds=0.4)


def test_patch_carries_progress_resume_point_checkpoint_and_metrics() -> None:
    event = ProgressEvent(kimg=1.28, step=80, images_per_second=512.0, total_kimg=2.0, checkpoint=CHECKPOINT,
                          metrics={"fd_domain": 3.5, "precision": 0.75}, resumed_from_kimg=0.64, resumed_from_step=40)
    assert status_patch(event) == {"status": {
        "progress": {"kimg": 1.28, "step": 80, "imagesPerSecond": 512.0, "totalKimg": 2.0,
                     "resumedFromKimg": 0.64, "resumedFromStep": 40},
        "checkpoint": {"uri": CHECKPOINT.uri, "kimg": 1.28, "step": 80, "sha256": "cd" * 32,
                       "time": "2025-01-02T03:04:05+00:00"},
        "metrics": {"fd_domain": 3.5, "precision": 0.75},
    }}
    # The body is a valid part of the job's status as the API models define it.
    GANTrainingJobStatus.model_validate(status_patch(event)["status"])


def test_fresh_start_clears_the_resume_point_and_leaves_checkpoint_and_metrics_alone() -> None:
    event = ProgressEvent(kimg=0.5, step=31, images_per_second=100.0, total_kimg=2.0,
                          metrics={"fd_domain": float("nan")})
    status = status_patch(event)["status"]
    assert set(status) == {"progress"}
    assert status["progress"]["resumedFromKimg"] is None and status["progress"]["resumedFromStep"] is None
    json.dumps(status, allow_nan=False)


def test_status_path_names_the_subresource() -> None:
    expected = "/apis/ganforge.io/v1alpha1/namespaces/team-a/gantrainingjobs/fashion/status"
    assert status_path("team-a", "fashion") == expected


def test_progress_file_keeps_its_keys_and_gains_the_resume_point(tmp_path: Path) -> None:
    FileProgressHook(tmp_path / "progress.json")(ProgressEvent(0.32, 20, 10.0, 1.0, CHECKPOINT, state="finished",
                                                               resumed_from_kimg=0.16, resumed_from_step=10))
    written = json.loads((tmp_path / "progress.json").read_text())
    assert {"kimg", "step", "images_per_second", "total_kimg", "checkpoint", "metrics", "state", "time"} <= set(written)
    assert (written["resumed_from_kimg"], written["resumed_from_step"]) == (0.16, 10)


def test_outside_a_pod_there_is_no_reporter(caplog: pytest.LogCaptureFixture) -> None:
    assert JobStatusReporter.from_environment({}) is None
    job = {trainer_env.JOB_NAME: "fashion", trainer_env.JOB_NAMESPACE: "team-a"}
    with caplog.at_level(logging.INFO, logger=job_status.__name__):
        assert JobStatusReporter.from_environment(job) is None
    assert len(caplog.records) == 1 and "not a Kubernetes pod" in caplog.messages[0]


def test_an_unreachable_apiserver_costs_the_caller_nothing(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("not-a-real-token")
    reporter = JobStatusReporter(f"https://127.0.0.1:{free_port()}", "team-a", "fashion", token, None,
                                 request_timeout=0.5, terminal_wait=2.0)
    try:
        started = time.monotonic()
        for step in range(100):
            reporter(ProgressEvent(step / 100, step, 1.0, 1.0))
        assert time.monotonic() - started < 0.5
        reporter(ProgressEvent(1.0, 100, 1.0, 1.0, state="preempted"))
        assert time.monotonic() - started < 2.5
        assert reporter.sent == 0 and reporter.failures + reporter.coalesced == 101
        assert reporter.last_error is not None and "cannot reach the apiserver" in reporter.last_error
    finally:
        reporter.close()


class CountingApiserver:
    """A local HTTP endpoint that accepts every PATCH and remembers the steps it was sent."""

    def __init__(self) -> None:
        steps = self.steps = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PATCH(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                steps.append(body["status"]["progress"]["step"])
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_progress_is_sent_at_most_once_per_interval_but_terminal_reports_at_once(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    apiserver = CountingApiserver()
    reporter = JobStatusReporter(apiserver.url, "team-a", "fashion", token, None, min_interval=60)
    try:
        for step in range(50):
            reporter(ProgressEvent(step / 100, step, 1.0, 1.0))
        time.sleep(0.5)
        assert len(apiserver.steps) == 1, "within the interval one report goes, the others wait and coalesce"
        reporter(ProgressEvent(0.5, 50, 1.0, 1.0, state="preempted"))
        assert apiserver.steps[1:] == [50], "the terminal report replaces the waiting ones and goes at once"
        reporter(ProgressEvent(0.6, 60, 1.0, 1.0))
        assert reporter.flush(5) and apiserver.steps[1:] == [50, 60], "a flush does not wait for the interval"
        assert reporter.sent + reporter.coalesced == 52
    finally:
        reporter.close()
        apiserver.server.shutdown()
