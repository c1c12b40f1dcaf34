"""What the cluster-level services (kube-proxy, CoreDNS, the volume provisioner) share.

They run beside the control plane, not inside it: each is started after the apiserver is ready,
with its own least-privilege identity, and carries the cluster's process marker so `down` (and
the test suite's leak check) finds anything they leave behind.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from kubernetes import client, config
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from ganforge.local.control_plane import ControlPlane, ensure_alive_before
from ganforge.local.processes import ManagedProcess


def launch(plane: ControlPlane, name: str, argv: list[str]) -> ManagedProcess:
    """Start `argv` with the cluster's marker and a log next to the control plane's logs."""
    process = ManagedProcess(name, argv, plane.workdir / "logs" / f"{name}.log", plane.child_env())
    process.start()
    return process


@contextmanager
def api_client(kubeconfig: Path) -> Iterator[ApiClient]:
    """An API client for `kubeconfig`, closed (with its connection pool) on exit."""
    # The generated client is untyped; these two calls are its only entry and exit here.
    api: ApiClient = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    try:
        yield api
    finally:
        api.close()  # type: ignore[no-untyped-call]


def wait_until(
    process: ManagedProcess, probe: Callable[[], str | None], deadline: float, waiting_for: str
) -> None:
    """Poll `probe` (None means done, a string says why not yet) while `process` stays alive."""
    while True:
        why_not = probe()
        if why_not is None:
            return
        ensure_alive_before(process, deadline, f"{waiting_for} ({why_not})")
        time.sleep(0.3)


def http_ok(url: str) -> str | None:
    """A `wait_until` probe: None once `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return None if response.status == 200 else f"HTTP {response.status}"
    except urllib.error.HTTPError as error:
        return f"HTTP {error.code}: {error.read()[:200].decode(errors='replace')}"
    except OSError as error:
        return str(error)


def grant_cluster_role(api: ApiClient, name: str, user: str, rules: list[client.V1PolicyRule]) -> None:
    """Create or replace ClusterRole `name` with `rules`, bound to `user` alone."""
    rbac = client.RbacAuthorizationV1Api(api)
    role = client.V1ClusterRole(metadata=client.V1ObjectMeta(name=name), rules=rules)
    binding = client.V1ClusterRoleBinding(
        metadata=client.V1ObjectMeta(name=name),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=name),
        subjects=[client.RbacV1Subject(api_group="rbac.authorization.k8s.io", kind="User", name=user)],
    )
    create_or_replace(lambda: rbac.create_cluster_role(role), lambda: rbac.replace_cluster_role(name, role))
    create_or_replace(
        lambda: rbac.create_cluster_role_binding(binding),
        lambda: rbac.replace_cluster_role_binding(name, binding),
    )


def create_or_replace(create: Callable[[], object], replace: Callable[[], object]) -> None:
    """Idempotent apply for objects whose whole content we own."""
    try:
        create()
    except ApiException as error:
        if error.status != 409:
            raise
        replace()


def write_private(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)
    return path
