"""Shared fixtures: one real control plane per pytest run, a fresh namespace per test.

The control plane starts lazily, only when a test asks for it, so `pytest tests/unit` never pays
for it. A missing binary is an error that says to run `make tools`, never a skip.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client import ApiClient

from ganforge.local import tools
from ganforge.local.control_plane import ControlPlane
from ganforge.local.processes import MARKER_ENV

_started: list[ControlPlane] = []


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    try:
        tools.tool_path("kube-apiserver")
    except tools.ToolMissingError as error:
        pytest.fail(str(error), pytrace=False)
    plane = ControlPlane(tmp_path_factory.mktemp("cluster"))
    _started.append(plane)
    with plane:
        yield plane


@pytest.fixture(scope="session")
def kube_api(control_plane: ControlPlane) -> Iterator[ApiClient]:
    api = config.new_client_from_config(config_file=str(control_plane.admin_kubeconfig))
    yield api
    api.close()


@pytest.fixture
def namespace(kube_api: ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace whose `default` ServiceAccount exists, so Pods are admitted at once."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].rstrip("-")
    name = f"{slug}-{uuid.uuid4().hex[:5]}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    deadline = time.monotonic() + 30
    while True:
        if any(sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"ServiceAccount default never appeared in namespace {name}")
        time.sleep(0.2)
    yield name
    core.delete_namespace(name)


class Kubectl:
    """The real kubectl against the test cluster, with errors that show its stderr."""

    def __init__(self, kubeconfig: Path) -> None:
        self.binary = str(tools.tool_path("kubectl"))
        self.kubeconfig = kubeconfig

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        result = subprocess.run(
            [self.binary, f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin, capture_output=True, text=True, env=env, timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result


@pytest.fixture(scope="session")
def kubectl(control_plane: ControlPlane) -> Kubectl:
    return Kubectl(control_plane.admin_kubeconfig)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Session fixtures are torn down by now: anything still carrying a cluster's marker leaked.
    for plane in _started:
        leftover = plane.leftover_processes()
        if leftover:
            plane.stop()
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
            print(f"\nERROR: processes of cluster {plane.cluster_id} ({MARKER_ENV}) outlived the run: {leftover}")
