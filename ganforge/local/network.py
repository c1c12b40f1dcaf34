"""The one-machine cluster's addressing plan, shared by the node agent and the cluster services.

Services get virtual IPs from SERVICE_CIDR (allocated by the apiserver, made real by kube-proxy's
netfilter rules). Pods get /32 addresses from POD_CIDR, a /24 per node, each routed from the host
through the pod's own veth: there is no bridge, so every packet to or from a pod crosses the
host's netfilter hooks, which is what lets one kube-proxy on the host serve every pod.
"""

from __future__ import annotations

from ganforge.local.control_plane import KUBERNETES_SERVICE_IP, SERVICE_CIDR

POD_CIDR = "10.244.0.0/16"
# The prefix length of each node's slice of POD_CIDR (node.spec.podCIDR).
NODE_POD_PREFIX = 24
CLUSTER_DOMAIN = "cluster.local"
# Tenth address of the service range, as kubeadm chooses; pods get it as their only nameserver.
CLUSTER_DNS_IP = "10.96.0.10"

__all__ = [
    "CLUSTER_DNS_IP",
    "CLUSTER_DOMAIN",
    "KUBERNETES_SERVICE_IP",
    "NODE_POD_PREFIX",
    "POD_CIDR",
    "SERVICE_CIDR",
]
