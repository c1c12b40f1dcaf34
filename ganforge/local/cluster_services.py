"""Cluster networking as one unit: kube-proxy and CoreDNS, started together and stopped together."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ganforge.local.cluster_dns import DNS_PORT, ClusterDNS
from ganforge.local.control_plane import ControlPlane
from ganforge.local.service_proxy import ServiceProxy


@dataclass
class ClusterNetwork:
    """Service IPs (kube-proxy) and cluster DNS (CoreDNS behind kube-dns) for `plane`.

    `node_name` is the Node kube-proxy reports as; see ganforge.local.service_proxy for why one
    kube-proxy serves every local node.
    """

    plane: ControlPlane
    node_name: str
    dns_port: int = DNS_PORT
    proxy: ServiceProxy = field(init=False)
    dns: ClusterDNS = field(init=False)

    def __post_init__(self) -> None:
        self.proxy = ServiceProxy(self.plane, self.node_name)
        self.dns = ClusterDNS(self.plane, port=self.dns_port)

    def __enter__(self) -> ClusterNetwork:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        try:
            # kube-proxy may spend its first 30 s waiting for its Node; CoreDNS starts meanwhile.
            self.proxy.launch()
            self.dns.start(timeout=max(1.0, deadline - time.monotonic()))
            self.proxy.wait_ready(deadline)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        try:
            self.dns.stop()
        finally:
            self.proxy.stop()
