"""Cluster DNS: the real CoreDNS on the host, reached by pods at kube-dns's usual 10.96.0.10.

CoreDNS runs as a host process rather than a pod, so it needs no image and is up before any node.
It listens on the host address at an unprivileged port (1053; port 53 may belong to a host
resolver) and the `kube-system/kube-dns` Service, with ClusterIP 10.96.0.10 and ports 53/UDP and
53/TCP, is backed by a selectorless EndpointSlice pointing at that address and port. kube-proxy
then translates 10.96.0.10:53 to it exactly as it would for a CoreDNS pod, so a pod whose
resolv.conf says `nameserver 10.96.0.10` resolves `<svc>.<ns>.svc.cluster.local` as on any cluster.
The host address is used because the API rejects loopback endpoint addresses, and because pods
in their own network namespaces cannot reach the host's loopback anyway.

Only the cluster zones are served: there is no upstream resolver to forward other names to on
the machines this runs on, so other names get REFUSED instead of a slow timeout.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from kubernetes import client

from ganforge.local import tools
from ganforge.local.control_plane import CLUSTER_NAME, ControlPlane, free_port
from ganforge.local.network import CLUSTER_DNS_IP, CLUSTER_DOMAIN
from ganforge.local.processes import ManagedProcess
from ganforge.local.service_support import (
    api_client,
    create_or_replace,
    grant_cluster_role,
    http_ok,
    launch,
    wait_until,
)

DNS_PORT = 1053
DNS_USER = "ganforge:cluster-dns"
DNS_ROLE = "ganforge:cluster-dns"
SERVICE_NAMESPACE = "kube-system"
SERVICE_NAME = "kube-dns"
# Our own controller name, so the EndpointSlice controllers leave the hand-made slice alone.
SLICE_MANAGER = "cluster-dns.ganforge.io"
SLICE_NAME = f"{SERVICE_NAME}-host"

# What CoreDNS's kubernetes plugin lists and watches, and nothing else: no pod records
# (`pods disabled`), hence no access to pods.
_DNS_RULES = [
    client.V1PolicyRule(api_groups=[""], resources=["services", "namespaces"], verbs=["list", "watch"]),
    client.V1PolicyRule(api_groups=["discovery.k8s.io"], resources=["endpointslices"], verbs=["list", "watch"]),
]


def corefile(bind_address: str, port: int, kubeconfig: Path, health_port: int, ready_port: int) -> str:
    zones = f"{CLUSTER_DOMAIN} in-addr.arpa ip6.arpa"
    return f"""\
{' '.join(f'{zone}:{port}' for zone in zones.split())} {{
    bind {bind_address}
    errors
    log . {{
        class denial error
    }}
    health 127.0.0.1:{health_port}
    ready 127.0.0.1:{ready_port}
    kubernetes {zones} {{
        kubeconfig {kubeconfig} {CLUSTER_NAME}
        pods disabled
        ttl 5
    }}
    cache 30
}}
"""


@dataclass
class ClusterDNS:
    """CoreDNS for `plane` plus the kube-dns Service and EndpointSlice that front it."""

    plane: ControlPlane
    port: int = DNS_PORT
    process: ManagedProcess | None = field(default=None, init=False)

    @property
    def address(self) -> str:
        return self.plane.advertise_address

    def start(self, timeout: float = 60.0) -> None:
        binary = tools.tool_path("coredns")
        deadline = time.monotonic() + timeout
        try:
            with api_client(self.plane.admin_kubeconfig) as api:
                self._start(api, binary, deadline)
        except BaseException:
            self.stop()
            raise

    def _start(self, api: client.ApiClient, binary: Path, deadline: float) -> None:
        grant_cluster_role(api, DNS_ROLE, DNS_USER, _DNS_RULES)
        kubeconfig = self.plane.issue_client_kubeconfig("cluster-dns", DNS_USER)
        health_port, ready_port = free_port(), free_port()
        config_path = self.plane.workdir / "Corefile"
        config_path.write_text(corefile(self.address, self.port, kubeconfig, health_port, ready_port))
        self.process = launch(self.plane, "coredns", [str(binary), "-conf", str(config_path)])
        # /ready turns 200 once the kubernetes plugin has listed Services and EndpointSlices.
        url = f"http://127.0.0.1:{ready_port}/ready"
        wait_until(self.process, lambda: http_ok(url), deadline, f"CoreDNS {url}")
        _publish_service(api, self.address, self.port)

    def stop(self) -> None:
        # The Service and RBAC objects die with the cluster's etcd; only the process needs stopping.
        if self.process is not None:
            self.process.stop()
            self.process = None


def _publish_service(api: client.ApiClient, address: str, port: int) -> None:
    core = client.CoreV1Api(api)
    discovery = client.DiscoveryV1Api(api)
    labels = {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}
    service = client.V1Service(
        metadata=client.V1ObjectMeta(name=SERVICE_NAME, namespace=SERVICE_NAMESPACE, labels=labels),
        spec=client.V1ServiceSpec(
            cluster_ip=CLUSTER_DNS_IP,
            # No selector: the endpoint is a host process, described by the slice below.
            ports=[
                client.V1ServicePort(name="dns", protocol="UDP", port=53, target_port=port),
                client.V1ServicePort(name="dns-tcp", protocol="TCP", port=53, target_port=port),
            ],
        ),
    )
    endpoint_slice = client.V1EndpointSlice(
        metadata=client.V1ObjectMeta(
            name=SLICE_NAME,
            namespace=SERVICE_NAMESPACE,
            labels={
                "kubernetes.io/service-name": SERVICE_NAME,
                "endpointslice.kubernetes.io/managed-by": SLICE_MANAGER,
            },
        ),
        address_type="IPv4",
        endpoints=[client.V1Endpoint(addresses=[address], conditions=client.V1EndpointConditions(ready=True))],
        # kube-proxy pairs slice ports with Service ports by name.
        ports=[
            client.DiscoveryV1EndpointPort(name="dns", protocol="UDP", port=port),
            client.DiscoveryV1EndpointPort(name="dns-tcp", protocol="TCP", port=port),
        ],
    )
    # A restart of CoreDNS in the same cluster finds its Service already there; the ClusterIP is
    # fixed, so there is nothing to update. (Creating it again would fail with 422, not 409: the
    # apiserver allocates the ClusterIP before it notices the name is taken.)
    try:
        core.read_namespaced_service(SERVICE_NAME, SERVICE_NAMESPACE)
    except client.exceptions.ApiException as error:
        if error.status != 404:
            raise
        core.create_namespaced_service(SERVICE_NAMESPACE, service)
    create_or_replace(
        lambda: discovery.create_namespaced_endpoint_slice(SERVICE_NAMESPACE, endpoint_slice),
        lambda: discovery.replace_namespaced_endpoint_slice(SLICE_NAME, SERVICE_NAMESPACE, endpoint_slice),
    )
