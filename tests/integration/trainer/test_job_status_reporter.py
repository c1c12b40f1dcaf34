"""The trainer reports progress on its GANTrainingJob's status with nothing but its ServiceAccount token.

Everything runs against the real apiserver, with the real CRD and RBAC: a Role that allows `get` and
`patch` on `gantrainingjobs/status` of one named job, and a token from the TokenRequest API.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiClient

from ganforge.api import crd, trainer_env
from ganforge.api.training_job import API_GROUP, API_VERSION, KIND, PLURAL, VERSION
from ganforge.local.control_plane import ControlPlane
from ganforge.operator.children import JobRef, trainer_rbac
from ganforge.trainer import job_status
from ganforge.trainer.checkpoint import CheckpointInfo
from ganforge.trainer.job_status import JobStatusReporter
from ganforge.trainer.outputs import ProgressEvent
from tests.conftest import Kubectl
from tests.helpers import eventually
from tests.integration.trainer.launch import tiny_spec, write_spec

REPO = Path(__file__).resolve().parents[3]
CRD_FILE = REPO / crd.MANIFEST_PATH
SERVICE_ACCOUNT = "trainer"
JOB, OTHER_JOB = "job-a", "job-b"


@pytest.fixture(scope="module")
def job_crd(kubectl: Kubectl) -> None:
    """The generated CRD, as `make manifests` writes it and the operator installs it."""
    if not CRD_FILE.is_file():
        pytest.fail(f"{CRD_FILE.relative_to(REPO)} is missing: generate it with `make manifests` "
                    "(python -m ganforge.api.crd)", pytrace=False)
    kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    kubectl.run("wait", "--for=condition=Established", f"crd/{crd.CRD_NAME}", "--timeout=60s")


@dataclass
class Trainer:
    """What a worker pod of JOB has: a token allowed to patch JOB's status and nothing else."""

    server: str
    ca: Path
    namespace: str
    token: Path

    def reporter(self, job: str = JOB, **options: Any) -> JobStatusReporter:
        return JobStatusReporter(self.server, self.namespace, job, self.token, self.ca, **options)


def job_object(name: str) -> dict[str, Any]:
    spec = {"dataset": {"uri": "fake://blobs?n=64", "format": "fake", "resolution": 16}}
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": spec}


def grant_status_access(api: ApiClient, namespace: str, job: str) -> None:
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": SERVICE_ACCOUNT}})
    # The rules the operator gives each job's trainer (ganforge.operator.children.trainer_rbac).
    [role] = [item for item in trainer_rbac(JobRef(job, namespace, "uid")) if item["kind"] == "Role"]
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "report-status"}, "rules": role["rules"]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "report-status"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "report-status"},
        "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": namespace}],
    })

    def allowed() -> bool:
        review = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
            user=f"system:serviceaccount:{namespace}:{SERVICE_ACCOUNT}",
            groups=["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"],
            resource_attributes=client.V1ResourceAttributes(group=API_GROUP, resource=PLURAL, subresource="status",
                                                            name=job, namespace=namespace, verb="patch")))
        return bool(client.AuthorizationV1Api(api).create_subject_access_review(review).status.allowed)

    # The RBAC authorizer learns about new bindings from a watch, a moment after they are created.
    eventually(allowed, timeout=30, what="the Role to take effect")


def request_token(api: ApiClient, namespace: str, path: Path) -> Path:
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[],
                                                                                 expiration_seconds=3600))
    response = client.CoreV1Api(api).create_namespaced_service_account_token(SERVICE_ACCOUNT, namespace, request)
    path.write_text(response.status.token)
    return path


@pytest.fixture
def trainer(job_crd: None, control_plane: ControlPlane, kube_api: ApiClient, namespace: str,
            tmp_path: Path) -> Iterator[Trainer]:
    custom = client.CustomObjectsApi(kube_api)
    for name in (JOB, OTHER_JOB):
        custom.create_namespaced_custom_object(API_GROUP, VERSION, namespace, PLURAL, job_object(name))
    grant_status_access(kube_api, namespace, JOB)
    token = request_token(kube_api, namespace, tmp_path / "token")
    yield Trainer(control_plane.server_url, control_plane.pki_dir / "ca.crt", namespace, token)


def read_status(api: ApiClient, namespace: str, name: str) -> dict[str, Any]:
    job = client.CustomObjectsApi(api).get_namespaced_custom_object(API_GROUP, VERSION, namespace, PLURAL, name)
    return dict(job.get("status") or {})


CHECKPOINT = CheckpointInfo(name="ckpt-000000000640", uri="file:///runs/a/checkpoints/ckpt-000000000640", nimg=640,
                            step=40, manifest_sha256="ab" * 32, created="2025-01-02T03:04:05+00:00")


def event(step: int, state: str = "running", **fields: Any) -> ProgressEvent:
    return ProgressEvent(kimg=step * 16 / 1000, step=step, images_per_second=250.0, total_kimg=1.28, state=state,
                         **fields)


def test_progress_checkpoint_and_metrics_land_on_the_job(trainer: Trainer, kube_api: ApiClient) -> None:
    reporter = trainer.reporter()
    try:
        reporter(event(40, checkpoint=CHECKPOINT, metrics={"fd_domain": 12.5}, resumed_from_kimg=0.32,
                       resumed_from_step=20))
        assert reporter.flush(10)
        status = read_status(kube_api, trainer.namespace, JOB)
        assert status["progress"] == {"kimg": 0.64, "step": 40, "imagesPerSecond": 250.0, "totalKimg": 1.28,
                                      "resumedFromKimg": 0.32, "resumedFromStep": 20}
        assert status["checkpoint"] == {"uri": CHECKPOINT.uri, "kimg": 0.64, "step": 40, "sha256": "ab" * 32,
                                        "time": "2025-01-02T03:04:05+00:00"}
        assert status["metrics"] == {"fd_domain": 12.5}

        # Bursts coalesce: every event is either sent or replaced by a newer one, and the newest wins.
        for step in range(41, 81):
            reporter(event(step, checkpoint=CHECKPOINT))
        assert reporter.flush(10)
        assert reporter.sent + reporter.coalesced == 41
        assert read_status(kube_api, trainer.namespace, JOB)["progress"]["step"] == 80

        # A terminal event is on the object by the time the call returns: no polling here.
        reporter(event(80, state="finished", checkpoint=CHECKPOINT))
        assert reporter.flush(0), "the terminal event was still unconfirmed when the call returned"
        status = read_status(kube_api, trainer.namespace, JOB)
        # This event has no resume point: its null removes the earlier one (merge-patch semantics).
        assert status["progress"]["kimg"] == 1.28 and "resumedFromKimg" not in status["progress"]
        assert status["metrics"] == {"fd_domain": 12.5}, "a report without metrics must keep the last ones"
        assert (reporter.failures, reporter.last_error) == (0, None)
    finally:
        reporter.close()


def test_the_token_can_patch_nothing_but_its_own_jobs_status(trainer: Trainer, kube_api: ApiClient) -> None:
    token = trainer.token.read_text()
    context = ssl.create_default_context(cafile=str(trainer.ca))
    spec_url = f"{trainer.server}/apis/{API_VERSION}/namespaces/{trainer.namespace}/{PLURAL}/{JOB}"
    request = urllib.request.Request(
        spec_url, method="PATCH", data=json.dumps({"spec": {"training": {"totalKimg": 99}}}).encode(),
        headers={"Content-Type": "application/merge-patch+json", "Authorization": f"Bearer {token}"})
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(request, timeout=10, context=context)
    assert denied.value.code == 403
    # Nor can it read anything else: other jobs, pods, secrets.
    for path in (f"/apis/{API_VERSION}/namespaces/{trainer.namespace}/{PLURAL}/{OTHER_JOB}",
                 f"/apis/{API_VERSION}/namespaces/{trainer.namespace}/{PLURAL}",
                 f"/api/v1/namespaces/{trainer.namespace}/pods", f"/api/v1/namespaces/{trainer.namespace}/secrets"):
        read = urllib.request.Request(f"{trainer.server}{path}", headers={"Authorization": f"Bearer {token}"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(read, timeout=10, context=context)
        assert refused.value.code == 403, path

    # Patching another job's status is refused too; the hook reports it and the caller carries on.
    reporter = trainer.reporter(OTHER_JOB)
    try:
        reporter(event(10))
        reporter(event(20, state="failed"))
        assert reporter.flush(0), "the refused terminal event was still unsettled when the call returned"
        assert reporter.failures >= 1 and reporter.sent == 0
        assert reporter.last_error is not None and reporter.last_error.startswith("HTTP 403")
    finally:
        reporter.close()
    assert "progress" not in read_status(kube_api, trainer.namespace, OTHER_JOB)


def run_trainer_in_pod(trainer: Trainer, plane: ControlPlane, config: Path, run_dir: Path, cache_dir: Path,
                       *extra: str) -> subprocess.CompletedProcess[str]:
    """`ganforge train` as a worker pod runs it: the token and CA at the in-cluster path (bind-mounted
    in a private mount namespace, so the host's directory is untouched) and the service variables set."""
    secrets = run_dir.parent / "serviceaccount"
    secrets.mkdir(parents=True, exist_ok=True)
    (secrets / "token").write_text(trainer.token.read_text())
    (secrets / "ca.crt").write_bytes(trainer.ca.read_bytes())
    (secrets / "namespace").write_text(trainer.namespace)
    # The mount point has to exist; the node runtime creates the same directory for its pods.
    job_status.SERVICE_ACCOUNT_DIR.mkdir(parents=True, exist_ok=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith("KUBE")}
    env.update({trainer_env.JOB_NAME: JOB, trainer_env.JOB_NAMESPACE: trainer.namespace,
                "KUBERNETES_SERVICE_HOST": plane.advertise_address,
                "KUBERNETES_SERVICE_PORT": str(plane.apiserver_port)})
    bind_then_exec = 'mount --bind "$0" "$1" && shift && exec "$@"'
    train = [sys.executable, "-m", "ganforge.cli", "train", "--config", str(config), "--run-dir", str(run_dir),
             "--cache-dir", str(cache_dir), "--threads", "1", "--no-tensorboard", *extra]
    command = ["unshare", "--mount", "--", "sh", "-c", bind_then_exec, str(secrets),
               str(job_status.SERVICE_ACCOUNT_DIR), *train]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_the_trainer_reports_from_inside_its_pod_and_after_a_resume(
    trainer: Trainer, control_plane: ControlPlane, kube_api: ApiClient, tmp_path: Path, cache_dir: Path
) -> None:
    run_dir = tmp_path / "run"
    first = write_spec(tmp_path / "first.yaml", tiny_spec(workers=1, total_kimg=0.32))
    done = run_trainer_in_pod(trainer, control_plane, first, run_dir, cache_dir)
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"reporting progress to the status of GANTrainingJob {trainer.namespace}/{JOB}" in done.stderr
    status = read_status(kube_api, trainer.namespace, JOB)
    assert (status["progress"]["kimg"], status["progress"]["step"], status["progress"]["totalKimg"]) == (0.32, 20, 0.32)
    assert "resumedFromKimg" not in status["progress"]
    assert (status["checkpoint"]["kimg"], status["checkpoint"]["step"]) == (0.32, 20)
    assert status["checkpoint"]["uri"].startswith(str(run_dir / "checkpoints"))

    # A longer run on the same checkpoints resumes from the first run's last one and says so.
    second = write_spec(tmp_path / "second.yaml", tiny_spec(workers=1, total_kimg=0.64))
    done = run_trainer_in_pod(trainer, control_plane, second, run_dir, cache_dir, "--allow-config-change")
    assert done.returncode == 0, done.stderr[-4000:]
    progress = read_status(kube_api, trainer.namespace, JOB)["progress"]
    assert (progress["kimg"], progress["step"]) == (0.64, 40)
    assert (progress["resumedFromKimg"], progress["resumedFromStep"]) == (0.32, 20)
    assert "job status:" not in done.stderr, "the reporter logged a failure"
