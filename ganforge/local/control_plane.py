"""A real Kubernetes control plane on one machine: etcd, kube-apiserver, controller-manager, scheduler.

Nothing is simulated: the binaries are the upstream ones built by `make tools`. Each component
authenticates with its own certificate from a throwaway CA and RBAC is on, so permissions behave
exactly as on a production cluster.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import os
import random
import socket
import ssl
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ganforge.local import tools
from ganforge.local.pki import CertificateAuthority, KeyPair, service_account_keys
from ganforge.local.processes import MARKER_ENV, ManagedProcess, kill_marked, processes_with_marker

log = logging.getLogger(__name__)

SERVICE_CIDR = "10.96.0.0/16"
# The first address of the service range is the in-cluster `kubernetes` Service.
KUBERNETES_SERVICE_IP = "10.96.0.1"
CLUSTER_NAME = "ganforge-local"


class ControlPlaneError(RuntimeError):
    """A component failed to start or become ready; the message carries its log tail."""


# Listening ports are picked below the NodePort range (30000-32767, which kube-proxy intercepts)
# and below the kernel's ephemeral range: a port the kernel may hand to an outgoing connection can
# be taken by one between this check and the server's own bind, on a machine busy with clients.
LISTEN_PORTS = range(20000, 30000)


@functools.cache
def _ephemeral_ports_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port nothing is bound to now, for a server that binds it shortly after."""
    candidates = range(LISTEN_PORTS.start, min(LISTEN_PORTS.stop, _ephemeral_ports_start()))
    if not candidates:
        raise OSError(f"no listening ports below the ephemeral range (starts at {_ephemeral_ports_start()})")
    for _ in range(200):
        port = random.choice(candidates)
        if port_is_free(port):
            return port
    raise OSError(f"no free port in {candidates.start}-{candidates.stop - 1}")


def port_is_free(port: int) -> bool:
    """Whether a server could listen on `port` now. Servers (Go's listeners, Python's HTTP servers)
    bind with SO_REUSEADDR, so connections a stopped server left in TIME_WAIT do not keep them off
    their port; checking without it would count the port as taken for a minute after every stop."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def host_address() -> str:
    """The address other network namespaces on this machine can reach the apiserver on.

    The apiserver refuses a loopback advertise address for the `kubernetes` Service endpoints,
    so prefer the interface behind the default route.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            # connect() on UDP sends nothing; it only asks the kernel which source address the
            # default route would use.
            sock.connect(("10.254.254.254", 9))
            address: str = sock.getsockname()[0]
        except OSError:
            return "127.0.0.1"
    return address


def kubeconfig_yaml(server: str, ca_pem: bytes, user: str, client: KeyPair) -> str:
    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CLUSTER_NAME,
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": b64(client.cert), "client-key-data": b64(client.key)},
            }
        ],
        "contexts": [{"name": CLUSTER_NAME, "context": {"cluster": CLUSTER_NAME, "user": user}}],
        "current-context": CLUSTER_NAME,
    }
    return yaml.safe_dump(document, sort_keys=False)


@dataclass
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler under `workdir`.

    Use as a context manager, or call start() and stop(). stop() is safe to call twice and kills
    every process that carries this cluster's marker, including anything they forked.
    """

    workdir: Path
    advertise_address: str = field(default_factory=host_address)
    # Shorter than upstream defaults so node loss is noticed in seconds, not minutes, on the
    # one-machine cluster, where "nodes" are agents that come and go in tests.
    node_monitor_grace_period: str = "20s"
    cluster_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    # More kube-apiserver flags (a benchmark turns on its audit log to count a client's requests).
    extra_apiserver_args: list[str] = field(default_factory=list)
    processes: list[ManagedProcess] = field(default_factory=list, init=False)
    apiserver_port: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._component_ports: dict[ManagedProcess, int] = {}

    @property
    def server_url(self) -> str:
        return f"https://{self.advertise_address}:{self.apiserver_port}"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def pki_dir(self) -> Path:
        return self.workdir / "pki"

    def child_env(self) -> dict[str, str]:
        """The environment for processes of this cluster: its marker, and no KUBE* variables
        that could point a client at another cluster."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
        env[MARKER_ENV] = self.cluster_id
        return env

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 120.0) -> None:
        binaries = {
            name: tools.tool_path(name)
            for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
        }
        self.workdir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        try:
            self._write_pki()
            etcd_url = self._start_etcd(binaries["etcd"])
            self._wait_etcd(etcd_url, deadline)
            self._start_apiserver(binaries["kube-apiserver"], etcd_url)
            self._wait_https(self.processes[-1], f"{self.server_url}/readyz", deadline, authenticated=True)
            self._start_controller_manager(binaries["kube-controller-manager"])
            self._start_scheduler(binaries["kube-scheduler"])
            for process, port in self._component_ports.items():
                self._wait_https(process, f"https://127.0.0.1:{port}/healthz", deadline)
        except BaseException:
            self.stop()
            raise
        log.info("control plane %s ready at %s", self.cluster_id, self.server_url)

    def stop(self) -> None:
        # Reverse order: clients first, so nothing logs connection errors to a dead apiserver.
        for process in reversed(self.processes):
            process.stop()
        leaked = kill_marked(self.cluster_id)
        if leaked:
            log.warning("killed %d stray processes of cluster %s: %s", len(leaked), self.cluster_id, leaked)

    def leftover_processes(self) -> list[int]:
        return processes_with_marker(self.cluster_id)

    # -- certificates and kubeconfigs --------------------------------------------------------

    def _apiserver_port(self) -> int:
        """The port of the last start when it is still free, so kubeconfigs handed out before a
        restart keep working; a new one (recorded for next time) when something else took it."""
        record = self.workdir / "apiserver-port"
        try:
            previous = int(record.read_text())
        except (FileNotFoundError, ValueError):
            previous = 0
        if previous and port_is_free(previous):
            return previous
        port = free_port()
        if previous:
            log.warning("apiserver port %d of the previous start is taken; using %d", previous, port)
        record.write_text(str(port))
        return port

    def _write_pki(self) -> None:
        """CA and ServiceAccount keys persist in the work dir (a restart keeps every issued
        credential valid); leaf certificates are issued afresh, since the address may change."""
        ca = CertificateAuthority(self.pki_dir)
        self._ca = ca
        self._serving = ca.issue(
            "apiserver",
            "kube-apiserver",
            dns_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ip_addresses=("127.0.0.1", self.advertise_address, KUBERNETES_SERVICE_IP),
            server=True,
        )
        self._apiserver_kubelet_client = ca.issue(
            "apiserver-kubelet-client", "kube-apiserver-kubelet-client",
            organizations=("kubeadm:cluster-admins",), client=True,
        )
        self._service_account_keys = service_account_keys(self.pki_dir)
        self.apiserver_port = self._apiserver_port()
        identities = {
            "admin": ("kubernetes-admin", ("system:masters",)),
            "controller-manager": ("system:kube-controller-manager", ()),
            "scheduler": ("system:kube-scheduler", ()),
        }
        for name, (user, groups) in identities.items():
            self.issue_client_kubeconfig(name, user, groups)

    def issue_client_kubeconfig(self, name: str, user: str, groups: tuple[str, ...] = ()) -> Path:
        """A kubeconfig for another identity (a node agent, an operator under test)."""
        pair = self._ca.issue(name, user, organizations=groups, client=True)
        path = self.workdir / f"{name}.kubeconfig"
        path.write_text(kubeconfig_yaml(self.server_url, self._ca.cert_pem, user, pair))
        path.chmod(0o600)
        return path

    # -- components --------------------------------------------------------------------------

    def _launch(self, name: str, argv: list[str]) -> ManagedProcess:
        process = ManagedProcess(name, argv, self.workdir / "logs" / f"{name}.log", self.child_env())
        process.start()
        self.processes.append(process)
        return process

    def _start_etcd(self, binary: Path) -> str:
        client_port, peer_port = free_port(), free_port()
        client_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        self._launch(
            "etcd",
            [
                str(binary),
                "--name=default",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                # The data is as disposable as the cluster; fsync would only slow every write.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        return client_url

    def _start_apiserver(self, binary: Path, etcd_url: str) -> None:
        pki = self.pki_dir
        self._launch(
            "kube-apiserver",
            [
                str(binary),
                f"--etcd-servers={etcd_url}",
                "--bind-address=0.0.0.0",
                f"--secure-port={self.apiserver_port}",
                f"--advertise-address={self.advertise_address}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--tls-cert-file={self._serving.cert}",
                f"--tls-private-key-file={self._serving.key}",
                f"--kubelet-client-certificate={self._apiserver_kubelet_client.cert}",
                f"--kubelet-client-key={self._apiserver_kubelet_client.key}",
                f"--kubelet-certificate-authority={pki / 'ca.crt'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={self._service_account_keys.cert}",
                f"--service-account-signing-key-file={self._service_account_keys.key}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                "--allow-privileged=true",
                f"--cert-dir={pki}",
                "--profiling=false",
                "--v=1",
                *self.extra_apiserver_args,
            ],
        )

    def _component_flags(self, identity: str, port: int) -> list[str]:
        kubeconfig = self.workdir / f"{identity}.kubeconfig"
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            # One instance per cluster: skipping the election saves its lease wait on start.
            "--leader-elect=false",
            "--profiling=false",
            "--v=1",
        ]

    def _start_controller_manager(self, binary: Path) -> None:
        port = free_port()
        pki = self.pki_dir
        process = self._launch(
            "kube-controller-manager",
            [
                str(binary),
                *self._component_flags("controller-manager", port),
                # Each controller acts with its own ServiceAccount, so RBAC denials are realistic.
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={self._service_account_keys.key}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                f"--cluster-name={CLUSTER_NAME}",
                f"--node-monitor-grace-period={self.node_monitor_grace_period}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--controllers=*",
            ],
        )
        self._component_ports[process] = port

    def _start_scheduler(self, binary: Path) -> None:
        port = free_port()
        process = self._launch("kube-scheduler", [str(binary), *self._component_flags("scheduler", port)])
        self._component_ports[process] = port

    # -- readiness ---------------------------------------------------------------------------

    def _wait_etcd(self, url: str, deadline: float) -> None:
        process = self.processes[-1]
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if json.load(response).get("health") == "true":
                        return
            except (OSError, ValueError):
                pass
            ensure_alive_before(process, deadline, "etcd /health")
            time.sleep(0.2)

    def _wait_https(self, process: ManagedProcess, url: str, deadline: float, authenticated: bool = False) -> None:
        context = ssl.create_default_context(cafile=str(self.pki_dir / "ca.crt"))
        if authenticated:
            admin = self.pki_dir / "admin"
            context.load_cert_chain(f"{admin}.crt", f"{admin}.key")
        else:
            # Controller-manager and scheduler serve a self-signed certificate of their own.
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        last_error = ""
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2, context=context) as response:
                    if response.status == 200:
                        return
            except urllib.error.HTTPError as error:
                last_error = f"HTTP {error.code}: {error.read()[:300].decode(errors='replace')}"
            except OSError as error:
                last_error = str(error)
            ensure_alive_before(process, deadline, f"{url} ({last_error})")
            time.sleep(0.3)


def ensure_alive_before(process: ManagedProcess, deadline: float, waiting_for: str) -> None:
    """Raise with the component's log tail if it died, or if `deadline` passed while waiting."""
    if not process.alive():
        raise ControlPlaneError(
            f"{process.name} exited while waiting for {waiting_for}; log {process.log_path}:\n"
            f"{process.log_tail()}"
        )
    if time.monotonic() > deadline:
        raise ControlPlaneError(
            f"timed out waiting for {waiting_for}; {process.name} log {process.log_path}:\n"
            f"{process.log_tail()}"
        )
