"""Cluster services are real: kube-proxy's rules carry Service traffic, CoreDNS answers real DNS
queries through the kube-dns Service, and the provisioner makes and removes real directories."""

from __future__ import annotations

import os
import random
import socket
import struct
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from ganforge.local.cluster_services import ClusterNetwork
from ganforge.local.control_plane import KUBERNETES_SERVICE_IP, ControlPlane, free_port
from ganforge.local.network import CLUSTER_DNS_IP
from ganforge.local.processes import MARKER_ENV
from ganforge.local.provisioner import STORAGE_CLASS, LocalStorage
from ganforge.local.service_proxy import ServiceProxy, ServiceProxyError, proxy_rules_present
from tests.helpers import eventually

# -- a minimal DNS client (RFC 1035), so the test depends on nothing but the stdlib -------------

def _dns_query(name: str, query_id: int) -> bytes:
    header = struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0)  # recursion desired, 1 question
    labels = b"".join(bytes([len(part)]) + part.encode() for part in name.rstrip(".").split("."))
    return header + labels + b"\0" + struct.pack("!HH", 1, 1)  # QTYPE A, QCLASS IN


def _skip_name(message: bytes, offset: int) -> int:
    while True:
        length = message[offset]
        if length & 0xC0 == 0xC0:  # compression pointer: two bytes end the name
            return offset + 2
        if length == 0:
            return offset + 1
        offset += 1 + length


def _parse_a_records(message: bytes, query_id: int) -> tuple[int, list[str]]:
    """(RCODE, IPv4 addresses of the A records in the answer section)."""
    response_id, flags, questions, answers, _, _ = struct.unpack("!HHHHHH", message[:12])
    assert response_id == query_id and flags & 0x8000, "not a response to our query"
    offset = 12
    for _ in range(questions):
        offset = _skip_name(message, offset) + 4
    addresses = []
    for _ in range(answers):
        offset = _skip_name(message, offset)
        rtype, _, _, length = struct.unpack("!HHIH", message[offset:offset + 10])
        offset += 10
        if rtype == 1 and length == 4:
            addresses.append(socket.inet_ntoa(message[offset:offset + 4]))
        offset += length
    return flags & 0x000F, addresses


def resolve_udp(name: str, server: str = CLUSTER_DNS_IP, port: int = 53) -> tuple[int, list[str]]:
    query_id = random.randrange(1 << 16)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(_dns_query(name, query_id), (server, port))
        message, _ = sock.recvfrom(4096)
    return _parse_a_records(message, query_id)


def resolve_tcp(name: str, server: str = CLUSTER_DNS_IP, port: int = 53) -> tuple[int, list[str]]:
    query_id = random.randrange(1 << 16)
    query = _dns_query(name, query_id)
    with socket.create_connection((server, port), timeout=2) as sock:
        sock.sendall(struct.pack("!H", len(query)) + query)  # DNS over TCP: length-prefixed
        data = b""
        while len(data) < 2 or len(data) < 2 + struct.unpack("!H", data[:2])[0]:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return _parse_a_records(data[2:], query_id)


def _answer_or_none(resolver: Callable[[str], tuple[int, list[str]]], name: str) -> tuple[int, list[str]] | None:
    """The (rcode, addresses) answer, or None when the query timed out (retried by the caller)."""
    try:
        return resolver(name)
    except OSError:
        return None


def answered(resolver: Callable[[str], tuple[int, list[str]]], name: str) -> list[str] | None:
    answer = _answer_or_none(resolver, name)
    return answer[1] if answer is not None and answer[0] == 0 and answer[1] else None


# -- helpers ------------------------------------------------------------------------------------

@pytest.fixture
def host_http_server(tmp_path: Path, control_plane: ControlPlane) -> Iterator[tuple[str, int, str]]:
    """A real HTTP server on the host address; yields (address, port, token it serves)."""
    token = uuid.uuid4().hex
    (tmp_path / "token").write_text(token)
    address, port = control_plane.advertise_address, free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", address, "--directory", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        eventually(lambda: _get(f"http://{address}:{port}/token") == token, what="the host HTTP server")
        yield address, port, token
    finally:
        server.terminate()
        server.wait(timeout=10)


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            body: str = response.read().decode()
            return body
    except OSError:
        return None


def selectorless_service(
    api: ApiClient, namespace: str, name: str, port: int, target: tuple[str, int]
) -> client.V1Service:
    """A Service whose only endpoint is `target`, described by a hand-made EndpointSlice."""
    service = client.CoreV1Api(api).create_namespaced_service(
        namespace,
        client.V1Service(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1ServiceSpec(ports=[client.V1ServicePort(name="http", port=port, protocol="TCP")]),
        ),
    )
    client.DiscoveryV1Api(api).create_namespaced_endpoint_slice(
        namespace,
        client.V1EndpointSlice(
            metadata=client.V1ObjectMeta(
                name=f"{name}-host",
                labels={
                    "kubernetes.io/service-name": name,
                    "endpointslice.kubernetes.io/managed-by": "tests.ganforge.io",
                },
            ),
            address_type="IPv4",
            endpoints=[client.V1Endpoint(addresses=[target[0]], conditions=client.V1EndpointConditions(ready=True))],
            ports=[client.DiscoveryV1EndpointPort(name="http", port=target[1], protocol="TCP")],
        ),
    )
    return service


def service_processes(plane: ControlPlane) -> list[str]:
    """Live kube-proxy and CoreDNS processes of this cluster, as 'pid name'."""
    needle = f"{MARKER_ENV}={plane.cluster_id}".encode()
    found: dict[int, str] = {}
    for pid in plane.leftover_processes():
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if name in ("kube-proxy", "coredns") and needle in environ.split(b"\0"):
            found[pid] = name
    # kube-proxy forks iptables-restore; until the exec the child still looks like kube-proxy.
    return [f"{pid} {name}" for pid, name in found.items() if _parent(pid) not in found]


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state; comm may hold spaces


# -- tests --------------------------------------------------------------------------------------

def test_kube_proxy_sends_cluster_ip_traffic_to_the_endpoint(
    cluster_network: ClusterNetwork, kube_api: ApiClient, namespace: str,
    host_http_server: tuple[str, int, str],
) -> None:
    address, port, token = host_http_server
    service = selectorless_service(kube_api, namespace, "web", 8080, (address, port))
    cluster_ip = service.spec.cluster_ip
    assert cluster_ip.startswith("10.96.")
    # The host's own connection to the virtual IP is DNATed in the nat OUTPUT chain.
    assert eventually(lambda: _get(f"http://{cluster_ip}:8080/token"), what=f"{cluster_ip}:8080") == token
    nat = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True, check=True).stdout
    assert f"{namespace}/web:http cluster IP" in nat
    assert f"-j DNAT --to-destination {address}:{port}" in nat


def test_coredns_answers_through_the_kube_dns_service(
    cluster_network: ClusterNetwork, kube_api: ApiClient, namespace: str,
    host_http_server: tuple[str, int, str],
) -> None:
    kube_dns = client.CoreV1Api(kube_api).read_namespaced_service("kube-dns", "kube-system")
    assert kube_dns.spec.cluster_ip == CLUSTER_DNS_IP
    kubernetes = "kubernetes.default.svc.cluster.local"
    assert eventually(lambda: answered(resolve_udp, kubernetes), what="UDP answer") == [KUBERNETES_SERVICE_IP]
    assert eventually(lambda: answered(resolve_tcp, kubernetes), what="TCP answer") == [KUBERNETES_SERVICE_IP]

    service = selectorless_service(kube_api, namespace, "model", 80, host_http_server[:2])
    name = f"model.{namespace}.svc.cluster.local"
    assert eventually(lambda: answered(resolve_udp, name), what=name) == [service.spec.cluster_ip]
    # A name in the cluster zone that no Service has is a real NXDOMAIN, not a timeout.
    missing = f"missing.{namespace}.svc.cluster.local"
    assert eventually(lambda: _answer_or_none(resolve_udp, missing), what=missing) == (3, [])


def test_provisioner_binds_a_claim_and_deletes_its_directory(
    local_storage: LocalStorage, kube_api: ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube_api)
    storage_class = client.StorageV1Api(kube_api).read_storage_class(STORAGE_CLASS)
    assert storage_class.metadata.annotations["storageclass.kubernetes.io/is-default-class"] == "true"
    # No class named: the default class applies, as on any cluster with one.
    claim = core.create_namespaced_persistent_volume_claim(
        namespace,
        client.V1PersistentVolumeClaim(
            metadata=client.V1ObjectMeta(name="checkpoints"),
            spec=client.V1PersistentVolumeClaimSpec(
                access_modes=["ReadWriteOnce"],
                resources=client.V1VolumeResourceRequirements(requests={"storage": "64Mi"}),
            ),
        ),
    )

    def bound() -> client.V1PersistentVolumeClaim | None:
        current = core.read_namespaced_persistent_volume_claim("checkpoints", namespace)
        return current if current.status.phase == "Bound" else None

    claim = eventually(bound, what="the claim to be Bound")
    volume = core.read_persistent_volume(claim.spec.volume_name)
    directory = Path(volume.spec.host_path.path)
    assert directory.is_dir()
    assert directory.name == f"{namespace}-checkpoints-{claim.metadata.uid}"
    assert directory.parent == local_storage.volumes_root
    assert volume.spec.capacity["storage"] == "64Mi"
    assert volume.spec.claim_ref.uid == claim.metadata.uid
    (directory / "generator.pt").write_bytes(b"weights")

    core.delete_namespaced_persistent_volume_claim("checkpoints", namespace)
    eventually(lambda: not directory.exists(), what=f"{directory} to be deleted")

    def volume_gone() -> bool:
        try:
            core.read_persistent_volume(volume.metadata.name)
        except ApiException as error:
            return error.status == 404
        return False

    eventually(volume_gone, what=f"PV {volume.metadata.name} to be deleted")


def test_stopping_the_network_leaves_no_rules_and_no_processes(
    cluster_network: ClusterNetwork, control_plane: ControlPlane
) -> None:
    assert proxy_rules_present(), "kube-proxy should have programmed KUBE-* chains while running"
    assert len(service_processes(control_plane)) == 2
    cluster_network.stop()
    try:
        assert proxy_rules_present() == []
        assert service_processes(control_plane) == []
    finally:
        # Later tests share the session's network: bring it back and prove it works again.
        cluster_network.start()
    kubernetes = "kubernetes.default.svc.cluster.local"
    assert eventually(lambda: answered(resolve_udp, kubernetes), what="DNS after restart") == [KUBERNETES_SERVICE_IP]


def test_a_second_kube_proxy_on_the_machine_is_refused(
    cluster_network: ClusterNetwork, control_plane: ControlPlane
) -> None:
    rules_before = proxy_rules_present()
    with pytest.raises(ServiceProxyError, match="only one cluster with networking"):
        ServiceProxy(control_plane, node_name="another-node").launch()
    # The refused one neither started a process nor cleaned the running one's rules away.
    assert len(service_processes(control_plane)) == 2
    # (The running kube-proxy may still be adding chains, e.g. for IPv6, so compare as subsets.)
    assert set(rules_before) <= set(proxy_rules_present())


def test_stopping_the_provisioner_leaves_no_process(local_storage: LocalStorage) -> None:
    process = local_storage.process
    assert process is not None and process.alive()
    pid = process.pid
    local_storage.stop()
    try:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    finally:
        local_storage.start()
