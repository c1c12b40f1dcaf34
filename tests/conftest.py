"""Shared fixtures: one real control plane per pytest run, a fresh namespace per test.

The control plane starts lazily, only when a test asks for it, so `pytest tests/unit` never pays
for it. A missing binary is an error that says to run `make tools`, never a skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client import ApiClient

from ganforge.local import tools
from ganforge.local.control_plane import ControlPlane
from ganforge.local.processes import MARKER_ENV

_started: list[ControlPlane] = []


def _require_tools(*names: str) -> None:
    """A missing binary fails the test with the fix (`make tools`); it never skips it."""
    for name in names:
        try:
            tools.tool_path(name)
        except tools.ToolMissingError as error:
            pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    _require_tools("kube-apiserver")
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
    yield from _fresh_namespace(kube_api, request)


# The apiserver's PodSecurity admission enforces the `restricted` profile in namespaces so labelled.
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/enforce-version": "latest"}


def _fresh_namespace(api: ApiClient, request: pytest.FixtureRequest,
                     labels: dict[str, str] | None = None) -> Iterator[str]:
    """A fresh namespace whose `default` ServiceAccount exists, so Pods are admitted at once."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].rstrip("-")
    name = f"{slug}-{uuid.uuid4().hex[:5]}"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels)))
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

    def apply_document(self, document: dict[str, Any], *flags: str) -> subprocess.CompletedProcess[str]:
        """`kubectl apply` of one object, its outcome left to the caller (rejections are expected)."""
        return self.run("apply", *flags, "-f", "-", stdin=json.dumps(document), check=False)


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


# -- cluster services: kube-proxy, CoreDNS, the local volume provisioner -----------------------

from ganforge.local.cluster_services import ClusterNetwork  # noqa: E402 - appended section
from ganforge.local.provisioner import LocalStorage  # noqa: E402 - appended section

# The Node name kube-proxy reports as. No node agent runs in these fixtures, so kube-proxy waits
# its upstream 30 s for this Node before carrying on; that wait is part of the fixture's start-up.
SERVICE_PROXY_NODE = "ganforge-node-0"


# Networks of the session's local clusters, which the module-scoped network below pauses.
_local_networks: list[ClusterNetwork] = []


# Module-scoped, not session-scoped: kube-proxy's rules are machine-wide, so only one cluster per
# machine may run it (ganforge.local.service_proxy), and the `local_cluster` fixture's cluster runs
# its own. This one ends with the module that used it, and a local cluster started by an earlier
# module hands its network over for that long, so both kinds of test mix in one run in any order.
@pytest.fixture(scope="module")
def cluster_network(control_plane: ControlPlane) -> Iterator[ClusterNetwork]:
    """kube-proxy and CoreDNS (kube-dns at 10.96.0.10) on top of the session's control plane."""
    _require_tools("kube-proxy", "coredns")
    with local_networks_paused(), ClusterNetwork(control_plane, node_name=SERVICE_PROXY_NODE) as network:
        yield network


@contextlib.contextmanager
def local_networks_paused() -> Iterator[None]:
    """The session's local clusters hand over the machine-wide kube-proxy and CoreDNS meanwhile."""
    paused = list(_local_networks)
    for other in paused:
        other.stop()
    try:
        yield
    finally:
        for other in paused:
            other.start()


@pytest.fixture(scope="module")
def machine_services_free() -> Iterator[None]:
    """For a test that runs a whole cluster of its own, services included (`ganforge local up`)."""
    with local_networks_paused():
        yield


@pytest.fixture(scope="session")
def local_storage(control_plane: ControlPlane) -> Iterator[LocalStorage]:
    """The `ganforge-local` default StorageClass and its provisioner, volumes under the cluster dir."""
    storage = LocalStorage(control_plane)
    storage.start()
    try:
        yield storage
    finally:
        storage.stop()


# -- the one-machine cluster with node agents -------------------------------------------------


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Control plane + an on-demand and a spot node agent running real pods."""
    from ganforge.local.cluster import LocalCluster

    _require_tools("kube-apiserver")
    cluster = LocalCluster(tmp_path_factory.mktemp("local-cluster"))
    _started.append(cluster.plane)
    with cluster:
        core = client.CoreV1Api(config.new_client_from_config(config_file=str(cluster.kubeconfig)))
        deadline = time.monotonic() + 60
        while len([n for n in core.list_node().items if _node_ready(n)]) < len(cluster.nodes):
            if time.monotonic() > deadline:
                raise TimeoutError("local cluster nodes did not become Ready")
            time.sleep(0.3)
        if cluster.network is not None:
            _local_networks.append(cluster.network)
        try:
            yield cluster
        finally:
            if cluster.network is not None:
                _local_networks.remove(cluster.network)


def _node_ready(node: client.V1Node) -> bool:
    # The node lifecycle controller lifts the not-ready taint a moment after Ready turns True;
    # until then nothing without a toleration can be scheduled there.
    not_ready_taint = any(t.key == "node.kubernetes.io/not-ready" for t in node.spec.taints or [])
    ready = any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
    return ready and not not_ready_taint


@pytest.fixture(scope="session")
def local_api(local_cluster) -> Iterator[ApiClient]:  # type: ignore[no-untyped-def]
    api = config.new_client_from_config(config_file=str(local_cluster.kubeconfig))
    yield api
    api.close()


@pytest.fixture
def local_core(local_api: ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(local_api)


@pytest.fixture
def local_namespace(local_api: ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    # The e2e suite's namespaces enforce `restricted`: a pod the operator creates that violates the
    # profile fails a test, not a user. Integration tests of the node runtime create raw pods.
    restricted = "e2e" in request.node.path.parts
    yield from _fresh_namespace(local_api, request, RESTRICTED if restricted else None)


# -- a trained generator ---------------------------------------------------------------------------

from tests.trained_run import TrainedRun, train_fashion  # noqa: E402 - appended section


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared across the session so the domain classifier and reference statistics are built once."""
    return tmp_path_factory.mktemp("ganforge-cache")


@pytest.fixture(scope="session")
def fashion_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> TrainedRun:
    return train_fashion(tmp_path_factory.mktemp("fashion-run"), cache_dir)
