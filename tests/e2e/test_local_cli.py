"""`ganforge local` as a user drives it: up, kubectl apply, logs, down, up again, delete."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from ganforge.local import tools
from ganforge.local.install import OPERATOR_DEPLOYMENT, OPERATOR_NAMESPACE, kubectl
from ganforge.local.processes import processes_with_marker
from tests.helpers import eventually, fast_job

POD = """
apiVersion: v1
kind: Pod
metadata: {name: hello}
spec:
  restartPolicy: Never
  containers:
    - name: main
      image: python:3.11
      command: [python, -c, "print('hello from ganforge local')"]
"""


def ganforge(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ganforge.cli", "local", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_up_apply_logs_down(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {**os.environ, "GANFORGE_LOCAL_DIR": str(state)}
    # The test session's own cluster owns the machine-wide service rules, so this one runs without.
    up = ganforge(env, "up", "--without-services")
    assert up.returncode == 0, up.stderr
    kubeconfig = state / "kubeconfig"
    assert f"export KUBECONFIG={kubeconfig}" in up.stdout
    cluster_id = json.loads((state / "cluster.json").read_text())["clusterId"]
    try:
        assert "is up" in ganforge(env, "status").stdout
        kubectl = [str(tools.tool_path("kubectl")), f"--kubeconfig={kubeconfig}"]
        eventually(lambda: subprocess.run([*kubectl, "get", "serviceaccount", "default"],
                                          capture_output=True).returncode == 0, what="default ServiceAccount")
        applied = subprocess.run([*kubectl, "apply", "-f", "-"], input=POD, capture_output=True, text=True)
        assert applied.returncode == 0, applied.stderr

        def phase() -> str | None:
            result = subprocess.run([*kubectl, "get", "pod", "hello", "-o", "jsonpath={.status.phase}"],
                                    capture_output=True, text=True)
            return result.stdout if result.stdout in ("Succeeded", "Failed") else None

        assert eventually(phase, timeout=90, what="the pod to finish") == "Succeeded"
        logs = ganforge(env, "logs", "hello")
        assert logs.returncode == 0 and logs.stdout == "hello from ganforge local\n"
    finally:
        down = ganforge(env, "down", timeout=120)
    assert down.returncode == 0, down.stderr
    assert not processes_with_marker(cluster_id)
    assert "not running" in ganforge(env, "status").stdout


def _assert_prometheus_printed_and_ready(stdout: str) -> None:
    match = re.search(r"^Prometheus .*: (http://\S+)$", stdout, re.MULTILINE)
    assert match, stdout
    with urllib.request.urlopen(f"{match.group(1)}/-/ready", timeout=10) as response:
        assert response.status == 200


def _job_phase(kubeconfig: Path, name: str) -> str:
    return kubectl(kubeconfig, "get", "gtj", name, "-o", "jsonpath={.status.phase}")


def _apply_job(kubeconfig: Path, name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(fast_job(name)))
    kubectl(kubeconfig, "apply", "-f", str(path))


# A cluster of its own with kube-proxy, CoreDNS and the provisioner (the operator reaches the
# apiserver through the `kubernetes` Service), numbered apart from the session's cluster.
@pytest.mark.timeout(1500)
@pytest.mark.usefixtures("machine_services_free")
def test_down_and_up_bring_the_same_cluster_back_and_delete_starts_afresh(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {**os.environ, "GANFORGE_LOCAL_DIR": str(state)}
    kubeconfig = state / "kubeconfig"
    try:
        up = ganforge(env, "up", "--first-node-index", "11")
        assert up.returncode == 0, up.stderr
        _assert_prometheus_printed_and_ready(up.stdout)
        assert ganforge(env, "install", timeout=300).returncode == 0
        _apply_job(kubeconfig, "before", tmp_path)
        eventually(lambda: _job_phase(kubeconfig, "before") == "Succeeded", 300, "the first job to succeed")
        ca = (state / "cluster" / "control-plane" / "pki" / "ca.crt").read_bytes()
        kubeconfig_before = tmp_path / "kubeconfig-before"
        kubeconfig_before.write_bytes(kubeconfig.read_bytes())
        cluster_id = json.loads((state / "cluster.json").read_text())["clusterId"]

        down = ganforge(env, "down", timeout=120)
        assert down.returncode == 0 and "state is kept" in down.stdout, down.stderr
        assert not processes_with_marker(cluster_id)

        again = ganforge(env, "up")
        assert again.returncode == 0 and "up again" in again.stdout, again.stderr
        _assert_prometheus_printed_and_ready(again.stdout)
        restarted = time.monotonic()
        # The same cluster: same CA, and the kubeconfig handed out before still works.
        assert (state / "cluster" / "control-plane" / "pki" / "ca.crt").read_bytes() == ca
        assert _job_phase(kubeconfig_before, "before") == "Succeeded"
        kubectl(kubeconfig, "-n", OPERATOR_NAMESPACE, "rollout", "status", f"deployment/{OPERATOR_DEPLOYMENT}",
                "--timeout", "180s", timeout=200)
        # The operator reconciles again: the old job's finalizer is removed and it goes.
        kubectl(kubeconfig, "delete", "gtj", "before", "--wait=false")
        eventually(lambda: "before" not in kubectl(kubeconfig, "get", "gtj", "-o", "name"), 180,
                   "the old job to be deleted")
        print(f"\nup -> old job deleted by the restarted operator: {time.monotonic() - restarted:.1f} s")
        _apply_job(kubeconfig, "after", tmp_path)
        eventually(lambda: _job_phase(kubeconfig, "after") == "Succeeded", 300, "a new job to succeed")

        deleted = ganforge(env, "delete", timeout=180)
        assert deleted.returncode == 0, deleted.stderr
        assert not state.exists()
        fresh = ganforge(env, "up", "--first-node-index", "11")
        assert fresh.returncode == 0 and "up again" not in fresh.stdout, fresh.stderr
        assert (state / "cluster" / "control-plane" / "pki" / "ca.crt").read_bytes() != ca
        assert kubectl(kubeconfig, "get", "crd", "-o", "name").strip() == ""
        namespaces = kubectl(kubeconfig, "get", "namespaces", "-o", "name").split()
        assert OPERATOR_NAMESPACE not in " ".join(namespaces), namespaces
    finally:
        ganforge(env, "delete", timeout=180)
