"""`ganforge local` as a user drives it: up, kubectl apply, logs, down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ganforge.local import tools
from ganforge.local.processes import processes_with_marker
from tests.helpers import eventually

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
