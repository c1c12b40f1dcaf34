"""The GANTrainingJob operator end to end, on the real control plane and the local node runtime.

The operator runs as users run it: installed with `helm install` of charts/ganforge, in its
Deployment, under its ServiceAccount and exactly the ClusterRole written there. The crash test
runs a second copy on the host with a token of that same ServiceAccount.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton_http
import yaml
from kubernetes import client
from kubernetes.client import ApiClient
from prometheus_client.parser import text_string_to_metric_families

from ganforge.api import metrics as catalogue
from ganforge.api.inference_service import PLURAL as SERVICE_PLURAL
from ganforge.api.inference_service import TRITON_HTTP_PORT
from ganforge.api.training_job import API_GROUP, PLURAL, VERSION
from ganforge.local import chart, report_cli
from ganforge.local.install import (
    EXAMPLE_JOB,
    EXAMPLE_SERVICE,
    OPERATOR_DEPLOYMENT,
    OPERATOR_NAMESPACE,
    kubectl,
)
from ganforge.local.provisioner import claim_host_path
from ganforge.observability import alerts, dashboards
from ganforge.observability.promql import series_names
from ganforge.operator.kube import CRASH_AFTER_WRITES_ENV
from ganforge.serving.client import latents
from ganforge.serving.export import PARITY_BOUNDS, onnxruntime_images
from tests.e2e.cluster import assert_scraped, prometheus, query_until
from tests.helpers import OPERATOR_TAKEOVER_SECONDS, answering_client, eventually, fast_job


def _job(api: ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return client.CustomObjectsApi(api).get_namespaced_custom_object(  # type: ignore[no-any-return]
        API_GROUP, VERSION, namespace, PLURAL, name)


def _status(api: ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return _job(api, namespace, name).get("status") or {}


def _pods(core: client.CoreV1Api, namespace: str, name: str) -> list[client.V1Pod]:
    return core.list_namespaced_pod(namespace, label_selector=f"ganforge.io/job={name}").items


def _create(kubeconfig: Path, namespace: str, document: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / f"{document['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(document))
    kubectl(kubeconfig, "apply", "-n", namespace, "-f", str(path))


def _timestamp(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else datetime.fromisoformat(
        str(value).replace("Z", "+00:00")).timestamp()


# Its waits add up to more than the default per-test limit; each of them is bounded on its own.
@pytest.mark.timeout(1800)
def test_example_trains_survives_a_spot_reclaim_resumes_exports_and_is_served(
        operator: Path, local_cluster: Any, local_api: ApiClient, local_core: client.CoreV1Api,
        local_namespace: str, tmp_path: Path) -> None:
    namespace, name = local_namespace, "fashion-mnist-dcgan"
    document = yaml.safe_load(EXAMPLE_JOB.read_text())
    assert document["metadata"]["name"] == name
    kubectl(operator, "apply", "-n", namespace, "-f", str(EXAMPLE_JOB))
    created = _timestamp(_job(local_api, namespace, name)["metadata"]["creationTimestamp"])

    pods = eventually(lambda: (p := _pods(local_core, namespace, name)) and len(p) == 2 and p,
                      OPERATOR_TAKEOVER_SECONDS, "2 worker pods")
    latest_pod = max(_timestamp(p.metadata.creation_timestamp) for p in pods)
    print(f"\nCR created -> all pods created: {latest_pod - created:.1f} s (whole-second timestamps)")
    for pod in sorted(pods, key=lambda p: p.metadata.name):
        env = {e.name: e.value for e in pod.spec.containers[0].env}
        rank = int(pod.metadata.labels["ganforge.io/rank"])
        assert pod.metadata.name == f"{name}-g0-w{rank}"
        assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"]) == (str(rank), "2", "0")
        assert env["MASTER_ADDR"] == f"{name}-w0.{name}" and env["MASTER_PORT"] == "29500"
        assert pod.metadata.owner_references[0].kind == "GANTrainingJob"
    eventually(lambda: all(p.spec.node_name == "spot-1" for p in _pods(local_core, namespace, name)), 30,
               "workers scheduled on the spot node")

    total = float(document["spec"]["training"]["totalKimg"])
    first = eventually(lambda: (_status(local_api, namespace, name).get("progress") or {}).get("kimg"), 300,
                       "progress reported on the job status")
    eventually(lambda: (_status(local_api, namespace, name).get("progress") or {}).get("kimg", 0) > first, 120,
               "kimg growing")
    table = kubectl(operator, "get", "gtj", "-n", namespace)
    assert table.split()[:6] == ["NAME", "PHASE", "KIMG", "FD", "PREEMPTIONS", "AGE"] and "Running" in table
    eventually(lambda: (_status(local_api, namespace, name).get("checkpoint") or {}).get("kimg"), 240,
               "a periodic checkpoint")
    eventually(lambda: (_status(local_api, namespace, name).get("progress") or {}).get("kimg", 0) >= total / 2,
               300, "half of the training")

    before = _status(local_api, namespace, name)["progress"]
    counted_before = _operator_metrics(local_core)
    reclaim_started = time.time()
    reclaim = threading.Thread(target=local_cluster.reclaim_node, args=("spot-1", 30))
    reclaim.start()
    status = eventually(lambda: (s := _status(local_api, namespace, name)).get("preemptions") == 1 and s, 120,
                        "the preemption recorded")
    assert status["failures"] == 0 and status["lastFailure"]["disruption"] is True
    reclaim.join(timeout=180)
    resumed = eventually(
        lambda: (s := _status(local_api, namespace, name)).get("gang") == 1
        and (s.get("progress") or {}).get("resumedFromKimg") is not None and s, 300, "training resumed")
    print(f"reclaim -> training resumed (progress reported by the new gang): {time.time() - reclaim_started:.1f} s")
    # The emergency checkpoint on SIGTERM is at (or after) the last step reported before the reclaim.
    assert resumed["progress"]["resumedFromKimg"] >= before["kimg"], (before, resumed["progress"])
    assert resumed["progress"]["resumedFromStep"] >= before["step"]
    # The operator's recovery time is the status's own: the disruption it recorded to the Running
    # condition of the new gang, observed once.
    running = next(c for c in resumed["conditions"] if c["type"] == "Running")
    assert running["status"] == "True", resumed["conditions"]
    expected = _timestamp(running["lastTransitionTime"]) - _timestamp(resumed["lastFailure"]["time"])
    recovery = ("ganforge_operator_recovery_seconds_count", (("cause", "preemption"),))
    counted = eventually(lambda: (m := _operator_metrics(local_core)).get(recovery, 0) > counted_before.get(recovery, 0)
                         and m, 60, "the recovery counted by the operator")
    assert counted[recovery] - counted_before.get(recovery, 0) == 1
    recovered = ("ganforge_operator_recovery_seconds_sum", (("cause", "preemption"),))
    assert counted[recovered] - counted_before.get(recovered, 0) == pytest.approx(expected, abs=1e-6)
    restarts = ("ganforge_operator_restarts_total", (("cause", "preemption"),))
    assert counted[restarts] - counted_before.get(restarts, 0) == 1
    print(f"recovery time (status timestamps and the operator's histogram): {expected:.0f} s")

    final = eventually(lambda: (s := _status(local_api, namespace, name)).get("phase") in ("Succeeded", "Failed")
                       and s, 600, "the job to finish")
    assert final["phase"] == "Succeeded", json.dumps(final, indent=2)
    assert final["preemptions"] == 1 and final["failures"] == 0 and final["gang"] == 1
    assert final["progress"]["kimg"] == pytest.approx(total)
    assert "fd_domain" in final["metrics"], final["metrics"]
    # The checkpoint is named as the job names its storage, not by the pod's mount path.
    assert final["checkpoint"]["uri"].startswith(f"pvc://{name}-checkpoints/checkpoints/ckpt-"), final["checkpoint"]
    volume = claim_host_path(local_core, namespace, f"{name}-checkpoints")
    assert volume is not None, f"{name}-checkpoints is not bound to a host directory"
    run_dir = Path(volume) / "checkpoints" / "run"
    grids = sorted((run_dir / "samples").glob("fakes-*.png"))
    assert grids, f"no sample grid in {run_dir}"
    # `ganforge report` finds the run through the job's claim and shows the reclaim, and what the
    # cluster's Prometheus saw of the job's trainers (a chart appears only when it has data).
    report = tmp_path / "report.html"
    prometheus_url = local_cluster.prometheus.url
    assert report_cli.main([name, "-n", namespace, "--kubeconfig", str(operator), "--out", str(report),
                            "--prometheus", prometheus_url]) == 0
    page = report.read_text()
    assert "preempted at kimg" in page and "resumed from kimg" in page and "data:image/png;base64," in page
    assert f"As Prometheus saw it ({prometheus_url})" in page and "Age of the newest checkpoint (s)" in page
    # Events are posted by the operator after the status write that they describe, so wait for them.
    eventually(lambda: {"GangCreated", "Preempted", "Exported", "Succeeded"} <= _event_reasons(local_core, namespace),
               60, "the job's GangCreated, Preempted, Exported and Succeeded events")
    images = serve_the_example(operator, local_api, local_core, namespace, final, tmp_path)
    assert_prometheus_saw_it(local_cluster.prometheus.url, local_core)
    delete_the_job_and_keep_serving(operator, local_api, local_core, namespace, name, final, images)


# What the alerts and dashboards read that this flow cannot produce, and where it is checked.
NOT_IN_THIS_FLOW = {
    **dict.fromkeys(catalogue.CUDA_ONLY, "CUDA only: no GPU here"),
    **dict.fromkeys((catalogue.GATEWAY_REQUESTS, catalogue.GATEWAY_REQUEST_DURATION), "tests/e2e/test_rollout.py"),
    **dict.fromkeys((catalogue.SERVING_GATE_VALUE, catalogue.SERVING_GATE_PASSING), "tests/e2e/test_rollout.py"),
    catalogue.OPERATOR_RECONCILE_ERRORS: "tests/e2e/test_rejections.py",
}


def assert_prometheus_saw_it(url: str, core: client.CoreV1Api) -> None:
    """The real Prometheus of `ganforge local` scraped the operator, the trainer and Triton: every
    series the alerts and dashboards read has samples, except those this flow cannot produce."""
    used = set().union(*(series_names(q) for board in dashboards.dashboards() for q in board.queries()),
                       *(series_names(alert.expr) for alert in alerts.alerts()),
                       *(series_names(rule["expr"]) for rule in alerts.recording_rules()))
    used = {name for name in used if not name.startswith("ganforge:")}  # recorded, not scraped
    absent_here = {series for metric in NOT_IN_THIS_FLOW for series in metric.series}
    assert_scraped(url, used - absent_here)
    # A Triton pod that became ready a moment ago is found at the next discovery refresh and then
    # scraped: up to two intervals of 5 s after the grid was drawn through it.
    def scraped_jobs() -> set[str] | None:
        jobs = {t["labels"]["job"] for t in prometheus(url, "targets")["activeTargets"] if t["health"] == "up"}
        return jobs if {"ganforge-operator", "triton"} <= jobs else None

    eventually(scraped_jobs, 60, "Prometheus to scrape the operator and Triton")
    # The recovery the operator counted is in Prometheus as the operator serves it.
    recovered = ("ganforge_operator_recovery_seconds_sum", (("cause", "preemption"),))
    served = _operator_metrics(core)[recovered]
    query = 'sum(ganforge_operator_recovery_seconds_sum{cause="preemption"})'
    query_until(url, query, lambda samples: bool(samples) and float(samples[0]["value"][1]) == served, 30)


def _operator_metrics(core: client.CoreV1Api) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample the operator's replicas serve, summed over replicas, by name and labels."""
    selector = ",".join(f"{key}={value}" for key, value in chart.OPERATOR_SELECTOR.items())
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for pod in core.list_namespaced_pod(chart.NAMESPACE, label_selector=selector).items:
        if pod.status.phase != "Running" or not pod.status.pod_ip:
            continue
        text = urllib.request.urlopen(f"http://{pod.status.pod_ip}:8080/metrics", timeout=10).read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                samples[key] = samples.get(key, 0.0) + sample.value
    return samples


def serve_the_example(kubeconfig: Path, api: ApiClient, core: client.CoreV1Api, namespace: str,
                      job_status: dict[str, Any], tmp_path: Path) -> np.ndarray:
    """The trained job's export, served by the example GANInferenceService through real Triton;
    returns the images of latents(seed=7, 16) it answered."""
    artifact = job_status["artifact"]
    assert artifact["uri"].startswith("pvc://ganforge-models/fashion-mnist-dcgan/r"), artifact
    exported = next(c for c in job_status["conditions"] if c["type"] == "Exported")
    assert exported["status"] == "True" and artifact["revision"] in exported["message"]
    repository = claim_host_path(core, namespace, "ganforge-models")
    assert repository is not None
    revision = Path(repository) / "fashion-mnist-dcgan" / artifact["revision"]
    assert hashlib.sha256((revision / "manifest.json").read_bytes()).hexdigest() == artifact["sha256"]

    started = time.time()
    kubectl(kubeconfig, "apply", "-n", namespace, "-f", str(EXAMPLE_SERVICE))
    service = yaml.safe_load(EXAMPLE_SERVICE.read_text())["metadata"]["name"]
    status = eventually(lambda: (s := _service_status(api, namespace, service)).get("phase") == "Ready" and s, 300,
                        "the GANInferenceService to be Ready")
    print(f"GANInferenceService applied -> Ready (Triton serving): {time.time() - started:.1f} s")
    assert status["stableRevision"] == artifact["revision"] and status["modelName"] == service
    table = kubectl(kubeconfig, "get", "gis", "-n", namespace)
    assert table.split()[:7] == ["NAME", "MODEL", "STABLE", "CANARY", "WEIGHT", "READY", "AGE"], table
    assert artifact["revision"] in table and "True" in table

    # Through the stable Service: the same images onnxruntime makes of the file, from ganforge's
    # client and from tritonclient (what users may call it with).
    stable = f"{core.read_namespaced_service(service, namespace).spec.cluster_ip}:{TRITON_HTTP_PORT}"
    # The proxies learn of a new endpoint a moment after it is ready, as on any cluster.
    with answering_client(stable, service) as generator:
        print(f"GANInferenceService applied -> answering through its Service: {time.time() - started:.1f} s")
        z, labels = latents(generator.model, 16, seed=7)
        images = generator.generate(z, labels)
    assert images.shape == (16, 1, 32, 32) and images.dtype == np.float32
    assert labels is None  # the example is unconditional
    reference = triton_http.InferenceServerClient(url=stable)
    request = triton_http.InferInput("z", list(z.shape), "FP32")
    request.set_data_from_numpy(z)
    assert np.array_equal(reference.infer(service, [request]).as_numpy("image"), images)
    reference.close()
    direct = onnxruntime_images((revision / "model" / "1" / "model.onnx").read_bytes(), {"z": z})
    assert np.abs(images - direct).max() <= PARITY_BOUNDS["fp32"]

    grid = tmp_path / "grid.png"
    result = subprocess.run([sys.executable, "-m", "ganforge.cli", "generate", service, "-n", "64", "--out",
                             str(grid), "--namespace", namespace, "--kubeconfig", str(kubeconfig)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and grid.stat().st_size > 0, result.stderr
    return images


def delete_the_job_and_keep_serving(kubeconfig: Path, api: ApiClient, core: client.CoreV1Api, namespace: str,
                                    name: str, job_status: dict[str, Any], served: np.ndarray) -> None:
    """Deleting the job, checkpoint claim and all (retain: false), takes nothing that serves: the
    model repository is its own claim. The service reports its source gone and answers as before."""
    kubectl(kubeconfig, "patch", "gtj", name, "-n", namespace, "--type=merge",
            "-p", json.dumps({"spec": {"checkpoint": {"retain": False}}}))
    kubectl(kubeconfig, "delete", "gtj", name, "-n", namespace, "--wait=true", "--timeout=120s")
    eventually(lambda: not [c for c in core.list_namespaced_persistent_volume_claim(namespace).items
                            if c.metadata.name == f"{name}-checkpoints"], 120, "the checkpoint claim to go")
    service = yaml.safe_load(EXAMPLE_SERVICE.read_text())["metadata"]["name"]
    status = eventually(
        lambda: (s := _service_status(api, namespace, service)) and any(
            c["type"] == "Degraded" and c["status"] == "True" and c.get("reason") == "SourceNotFound"
            for c in s.get("conditions", [])) and s, 60, "the service to report its source gone")
    artifact = job_status["artifact"]
    assert status["stableRevision"] == artifact["revision"], status
    revision = Path(str(claim_host_path(core, namespace, "ganforge-models"))) / name / artifact["revision"]
    assert hashlib.sha256((revision / "manifest.json").read_bytes()).hexdigest() == artifact["sha256"]
    stable = f"{core.read_namespaced_service(service, namespace).spec.cluster_ip}:{TRITON_HTTP_PORT}"
    with answering_client(stable, service) as generator:
        z, labels = latents(generator.model, 16, seed=7)
        assert np.array_equal(generator.generate(z, labels), served)


def test_failures_count_against_backoff_limit_and_bad_data_fails_at_once(
        operator: Path, local_api: ApiClient, local_core: client.CoreV1Api, local_namespace: str,
        tmp_path: Path) -> None:
    namespace = local_namespace
    # A checkpoint location that cannot be written: a failure of the job, retryable, so it counts.
    _create(operator, namespace, fast_job("unwritable", checkpoint={"uri": "file:///proc/ganforge-checkpoints"}),
            tmp_path)
    # A valid spec whose dataset is not there at runtime: no retry can fix it.
    _create(operator, namespace, fast_job("no-data", dataset={"uri": "file:///nonexistent/fashion-mnist",
                                                               "format": "idx", "resolution": 16}), tmp_path)
    no_data = eventually(lambda: (s := _status(local_api, namespace, "no-data")).get("phase") == "Failed" and s,
                         240, "no-data to fail")
    failed = next(c for c in no_data["conditions"] if c["type"] == "Failed")
    assert failed["status"] == "True" and failed["reason"] == "DataError", failed
    assert "/nonexistent/fashion-mnist" in failed["message"], failed["message"]
    assert no_data["failures"] == 1 and no_data["gang"] == 0

    unwritable = eventually(lambda: (s := _status(local_api, namespace, "unwritable")).get("phase") == "Failed" and s,
                            300, "unwritable to fail after its retries")
    assert unwritable["failures"] == 2 and unwritable["preemptions"] == 0 and unwritable["gang"] == 1
    assert unwritable["lastFailure"]["reason"] == "CheckpointStorageError", unwritable["lastFailure"]
    assert "backoffLimit 1 exceeded" in next(c for c in unwritable["conditions"] if c["type"] == "Failed")["message"]
    # The first gang was removed before the second started. Of the last gang, the rank that failed is
    # kept for its logs; its peer is kept if it had exited by then (it usually fails as soon as rank 0
    # is gone), and stopped if it was still running.
    failed_pod = f"unwritable-g1-w{unwritable['lastFailure']['rank']}"

    def only_finished_pods_of_the_last_gang() -> list[client.V1Pod] | None:
        pods = _pods(local_core, namespace, "unwritable")
        finished = all(p.status.phase in ("Succeeded", "Failed") and p.metadata.deletion_timestamp is None
                       for p in pods)
        return pods if finished else None

    kept = eventually(only_finished_pods_of_the_last_gang, 120, "running pods of the failed job to be stopped")
    names = {p.metadata.name for p in kept}
    assert failed_pod in names and names <= {"unwritable-g1-w0", "unwritable-g1-w1"}, names
    eventually(lambda: {"WorkerFailed", "Failed"} <= _event_reasons(local_core, namespace, "Warning"), 60,
               "the WorkerFailed and Failed warnings")


def _service_status(api: ApiClient, namespace: str, name: str) -> dict[str, Any]:
    body = client.CustomObjectsApi(api).get_namespaced_custom_object(API_GROUP, VERSION, namespace, SERVICE_PLURAL,
                                                                     name)
    return body.get("status") or {}  # type: ignore[no-any-return]


def _event_reasons(core: client.CoreV1Api, namespace: str, type_: str | None = None) -> set[str]:
    return {e.reason for e in core.list_namespaced_event(namespace).items
            if e.involved_object.kind == "GANTrainingJob" and type_ in (None, e.type)}


def _operator_kubeconfig(local_cluster: Any, local_core: client.CoreV1Api, path: Path) -> Path:
    """A kubeconfig carrying a token of the operator's own ServiceAccount."""
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[],
                                                                                  expiration_seconds=3600))
    token = local_core.create_namespaced_service_account_token("ganforge-operator", OPERATOR_NAMESPACE,
                                                               request).status.token
    admin = yaml.safe_load(Path(local_cluster.kubeconfig).read_text())
    admin["users"] = [{"name": "operator", "user": {"token": token}}]
    for context in admin["contexts"]:
        context["context"]["user"] = "operator"
    path.write_text(yaml.safe_dump(admin))
    return path


def _run_operator(kubeconfig: Path, log: Path, *, crash_after: int | None = None) -> subprocess.Popen[bytes]:
    env = {"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin"}
    if crash_after is not None:
        env[CRASH_AFTER_WRITES_ENV] = str(crash_after)
    settings = log.parent / "settings.yaml"
    settings.write_text("failureBackoffSeconds: 1\n")
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "ganforge.cli", "operator", "--standalone", "--settings",
                                 str(settings), "--metrics-port", "0", "--health-port", "0"],
                                env=env, stdout=out, stderr=subprocess.STDOUT)


def test_operator_killed_mid_reconcile_leaves_no_duplicates(
        operator: Path, local_cluster: Any, local_api: ApiClient, local_core: client.CoreV1Api,
        local_namespace: str, tmp_path: Path) -> None:
    namespace, name = local_namespace, "crashy"
    apps = client.AppsV1Api(local_api)
    # The failpoint counts every write of the standalone operator: earlier tests' jobs, still being
    # deleted with their namespaces, must be finished off by the in-cluster operator first.
    custom = client.CustomObjectsApi(local_api)
    eventually(lambda: not custom.list_cluster_custom_object(API_GROUP, VERSION, PLURAL)["items"], 180,
               "earlier tests' jobs to be deleted")
    apps.patch_namespaced_deployment_scale(OPERATOR_DEPLOYMENT, OPERATOR_NAMESPACE, {"spec": {"replicas": 0}})
    try:
        eventually(lambda: not local_core.list_namespaced_pod(
            OPERATOR_NAMESPACE, label_selector="app.kubernetes.io/name=ganforge-operator").items, 60,
            "the in-cluster operator to stop")
        kubeconfig = _operator_kubeconfig(local_cluster, local_core, tmp_path / "operator.kubeconfig")
        _create(operator, namespace, fast_job(name), tmp_path)
        # Writes of a launch: ConfigMap, ServiceAccount, Role, RoleBinding, Service, NetworkPolicy, claim,
        # pod 0, pod 1, status. Dying after the 8th leaves half a gang and no record of the launch.
        first = _run_operator(kubeconfig, tmp_path / "operator.log", crash_after=8)
        assert first.wait(timeout=120) == 137, (tmp_path / "operator.log").read_text()
        assert [p.metadata.name for p in _pods(local_core, namespace, name)] == [f"{name}-g0-w0"]
        assert _status(local_api, namespace, name).get("launchedGang") is None

        second = _run_operator(kubeconfig, tmp_path / "operator.log")
        try:
            final = eventually(lambda: (s := _status(local_api, namespace, name)).get("phase") in (
                "Succeeded", "Failed") and s, 300, "the job to finish")
        finally:
            second.terminate()
            second.wait(timeout=30)
        assert final["phase"] == "Succeeded", (json.dumps(final, indent=2), (tmp_path / "operator.log").read_text())
        names = sorted(p.metadata.name for p in _pods(local_core, namespace, name))
        assert names == [f"{name}-g0-w0", f"{name}-g0-w1"] and final["gang"] == 0 and final["preemptions"] == 0
    finally:
        apps.patch_namespaced_deployment_scale(OPERATOR_DEPLOYMENT, OPERATOR_NAMESPACE, {"spec": {"replicas": 1}})
        kubectl(operator, "-n", OPERATOR_NAMESPACE, "rollout", "status", f"deployment/{OPERATOR_DEPLOYMENT}",
                "--timeout", "120s", timeout=130)
