"""Pod networking on one machine: a network namespace per pod, a routed /32 address, no bridge.

Each pod gets a veth pair: `eth0` inside its namespace holds the pod IP as a /32, the host end
answers ARP for a fixed link-local gateway and the host routes the pod IP to that veth. All pod
traffic, pod to pod included, therefore crosses the host's routing and iptables, which is what lets
kube-proxy's DNAT work for pod -> Service -> pod on the same machine (a shared bridge would need
br_netfilter for the return path).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ganforge.local.network import NODE_POD_PREFIX, POD_CIDR

log = logging.getLogger(__name__)

# The same link-local gateway in every pod, as in routed CNI plugins: it never exists as an
# address, the host side of the veth answers for it.
GATEWAY = "169.254.1.1"


class NetworkError(RuntimeError):
    pass


def _ip(*args: str) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def _write_sysctl(path: str, value: str) -> None:
    Path("/proc/sys", path).write_text(value)


def node_subnet(node_index: int) -> ipaddress.IPv4Network:
    """The node's slice of POD_CIDR (its spec.podCIDR); slice 0 is left unused."""
    pod_cidr = ipaddress.IPv4Network(POD_CIDR)
    slices = 2 ** (NODE_POD_PREFIX - pod_cidr.prefixlen)
    if not 1 <= node_index < slices:
        raise ValueError(f"node index {node_index} out of range 1..{slices - 1} for {POD_CIDR}")
    first = int(pod_cidr.network_address) + node_index * 2 ** (32 - NODE_POD_PREFIX)
    return ipaddress.IPv4Network((first, NODE_POD_PREFIX))


def netns_name(pod_uid: str) -> str:
    return f"gf-{pod_uid[:13]}"


def host_veth_name(pod_uid: str) -> str:
    # Interface names are limited to 15 characters.
    return f"gfv{pod_uid.replace('-', '')[:12]}"


@dataclass(frozen=True)
class PodNetwork:
    netns: str
    ip: str


class AddressAllocator:
    """Pod IPs for one node, leased by pod UID in files so an agent restart keeps them."""

    def __init__(self, subnet: ipaddress.IPv4Network, state_dir: Path) -> None:
        self.subnet = subnet
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)

    def lookup(self, pod_uid: str) -> str | None:
        for lease in self.state_dir.iterdir():
            if lease.read_text() == pod_uid:
                return lease.name
        return None

    def allocate(self, pod_uid: str) -> str:
        existing = self.lookup(pod_uid)
        if existing:
            return existing
        # .1 is left unused so the subnet reads like an ordinary node range.
        for host in list(self.subnet.hosts())[1:]:
            lease = self.state_dir / str(host)
            try:
                fd = os.open(lease, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(pod_uid)
            return str(host)
        raise NetworkError(f"no free pod address left in {self.subnet}")

    def release(self, pod_uid: str) -> None:
        address = self.lookup(pod_uid)
        if address:
            (self.state_dir / address).unlink(missing_ok=True)


def enable_forwarding() -> None:
    _write_sysctl("net/ipv4/ip_forward", "1")


def setup_pod_network(pod_uid: str, address: str) -> PodNetwork:
    """Create (idempotently) the namespace, veth, addresses and routes of one pod."""
    netns, veth = netns_name(pod_uid), host_veth_name(pod_uid)
    if netns in list_netns():
        return PodNetwork(netns, address)
    enable_forwarding()
    _ip("netns", "add", netns)
    try:
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _write_sysctl(f"net/ipv4/conf/{veth}/proxy_arp", "1")
        _ip("link", "set", veth, "up")
        _ip("route", "replace", f"{address}/32", "dev", veth, "scope", "link")
        host_mac = Path(f"/sys/class/net/{veth}/address").read_text().strip()
        _ip("-n", netns, "link", "set", "lo", "up")
        _ip("-n", netns, "addr", "add", f"{address}/32", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        _ip("-n", netns, "route", "add", GATEWAY, "dev", "eth0", "scope", "link")
        _ip("-n", netns, "route", "add", "default", "via", GATEWAY, "dev", "eth0")
        # A permanent neighbour entry means no dependence on proxy ARP timing at pod start.
        _ip("-n", netns, "neigh", "replace", GATEWAY, "lladdr", host_mac, "dev", "eth0", "nud", "permanent")
    except BaseException:
        teardown_pod_network(pod_uid)
        raise
    return PodNetwork(netns, address)


def teardown_pod_network(pod_uid: str) -> None:
    """Delete the pod's namespace; the veth pair and its host route go with it."""
    netns = netns_name(pod_uid)
    if netns in list_netns():
        _ip("netns", "delete", netns)
    veth = host_veth_name(pod_uid)
    if Path(f"/sys/class/net/{veth}").exists():
        try:
            _ip("link", "delete", veth)
        except NetworkError as error:
            # Deleting the namespace removes the pair asynchronously; it may be gone by now.
            if "Cannot find device" not in str(error):
                raise


def list_netns(prefix: str = "gf-") -> list[str]:
    try:
        return [name for name in os.listdir("/run/netns") if name.startswith(prefix)]
    except FileNotFoundError:
        return []


def list_host_veths() -> list[str]:
    return [name for name in os.listdir("/sys/class/net") if name.startswith("gfv")]
