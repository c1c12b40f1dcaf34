"""The real kube-proxy, one per machine, making Service virtual IPs work for host and pods alike.

Why only one: every local "node" is an agent process in the host's network namespace, and pods
reach the rest of the cluster through routes in that same namespace. Netfilter rules are
per-namespace, so a kube-proxy per node would program the very same KUBE-* chains, each
overwriting the others on every sync. One kube-proxy therefore serves all nodes; it watches the
Node named by `node_name` only for what kube-proxy reads from its own Node (addresses, topology
labels, its /healthz eligibility). The same reasoning makes a second cluster with networking on one
machine impossible, so a lock file refuses to start a second kube-proxy.

Mode: iptables, which on this project's Debian hosts is iptables-nft, i.e. nf_tables underneath;
the rules live in the host's ordinary `ip nat`/`ip filter` tables, where `iptables-save` shows
them.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import yaml

from ganforge.local import tools
from ganforge.local.control_plane import CLUSTER_NAME, ControlPlane, ControlPlaneError, free_port
from ganforge.local.network import POD_CIDR
from ganforge.local.processes import ManagedProcess
from ganforge.local.service_support import http_ok, launch, wait_until

# Bootstrap RBAC binds this user to the ClusterRole system:node-proxier, exactly kube-proxy's needs.
PROXY_USER = "system:kube-proxy"
# /run is a tmpfs: a lock file never outlives a reboot, and flock locks die with their holder.
LOCK_PATH = Path("/run/lock/ganforge-service-proxy.lock")
# kube-proxy's own chains, in every table it touches, all carry this prefix.
CHAIN_PREFIX = "KUBE-"
# The nft table kube-proxy's nftables mode creates (cleaned up too in case a run used that mode).
NFT_TABLE = "kube-proxy"


class ServiceProxyError(ControlPlaneError):
    """kube-proxy could not start, or left rules behind when stopped."""


@dataclass
class ServiceProxy:
    """kube-proxy for `plane`, acting as `node_name`, with its rules removed again on stop()."""

    plane: ControlPlane
    node_name: str
    cluster_cidr: str = POD_CIDR
    mode: str = "iptables"
    process: ManagedProcess | None = field(default=None, init=False)
    healthz_port: int = field(default=0, init=False)
    metrics_port: int = field(default=0, init=False)
    _lock: IO[str] | None = field(default=None, init=False, repr=False)

    def start(self, timeout: float = 90.0) -> None:
        """Start kube-proxy and wait until it has programmed the Services once."""
        self.launch()
        self.wait_ready(time.monotonic() + timeout)

    def launch(self) -> None:
        """Start kube-proxy without waiting, so callers can start other services meanwhile.

        If the Node `node_name` does not exist yet, kube-proxy itself waits 30 s for it before it
        carries on without (upstream behaviour, kept as is), so start the first node first when
        start-up time matters.
        """
        binary = tools.tool_path("kube-proxy")
        _require_netfilter_tools()
        self._lock = _take_machine_lock()
        try:
            # Rules left by a cluster whose owner was SIGKILLed would send Service traffic to
            # endpoints that no longer exist; start from a clean table.
            self._cleanup_rules(binary)
            self.process = launch(self.plane, "kube-proxy", [str(binary), f"--config={self._write_config()}"])
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, deadline: float) -> None:
        if self.process is None:
            raise ServiceProxyError("kube-proxy was not launched")
        process = self.process
        url = f"http://127.0.0.1:{self.healthz_port}/livez"
        try:
            # /livez turns 200 once the first full sync of the rules succeeded. /healthz would
            # also require the Node object to exist, which is the node agent's business.
            wait_until(process, lambda: http_ok(url), deadline, f"kube-proxy {url}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop kube-proxy and delete every rule it made; raises if any KUBE-* chain survives."""
        try:
            if self.process is not None:
                self.process.stop()
                self.process = None
            if self._lock is not None:
                self._cleanup_rules(tools.tool_path("kube-proxy"))
                leftovers = proxy_rules_present()
                if leftovers:
                    raise ServiceProxyError(f"kube-proxy rules survived cleanup: {leftovers}")
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None

    def _write_config(self) -> Path:
        self.healthz_port, self.metrics_port = free_port(), free_port()
        kubeconfig = self.plane.issue_client_kubeconfig("kube-proxy", PROXY_USER)
        document = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            "hostnameOverride": self.node_name,
            # Not a listen address: kube-proxy's idea of the node's primary IP, used for NodePorts
            # on "primary" addresses. The control plane advertises the same address.
            "bindAddress": self.plane.advertise_address,
            "healthzBindAddress": f"127.0.0.1:{self.healthz_port}",
            "metricsBindAddress": f"127.0.0.1:{self.metrics_port}",
            "mode": self.mode,
            # Traffic to a Service from outside the pod range (the host, other machines) is
            # masqueraded, so replies come back through the host.
            "clusterCIDR": self.cluster_cidr,
            "detectLocalMode": "ClusterCIDR",
            "nodePortAddresses": ["primary"],
            "iptables": {
                # True would flip net.ipv4.conf.all.route_localnet on the host for good.
                "localhostNodePorts": False,
                "syncPeriod": "30s",
                "minSyncPeriod": "1s",
            },
            "nftables": {"syncPeriod": "30s", "minSyncPeriod": "1s"},
            # Zero means "leave the host's sysctl alone": a VM or shared host often refuses
            # nf_conntrack_max changes, and a local cluster has no use for bigger tables.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
            # kube-proxy would otherwise make itself nearly unkillable by the OOM killer.
            "oomScoreAdj": 0,
        }
        path = self.plane.workdir / "kube-proxy.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    def _cleanup_rules(self, binary: Path) -> None:
        # `--cleanup` removes iptables, ipvs and nftables rules of every mode, then exits.
        result = subprocess.run(
            [str(binary), "--cleanup", "--v=1"],
            capture_output=True, text=True, timeout=60, env=self.plane.child_env(), check=False,
        )
        if result.returncode != 0:
            raise ServiceProxyError(f"kube-proxy --cleanup failed ({result.returncode}):\n{result.stderr}")
        # --cleanup keeps KUBE-FIREWALL (upstream shares it with kubelet, which has none here) and
        # can miss chains of older versions; on this machine every KUBE-* chain is ours.
        _delete_remaining_chains()


def proxy_rules_present() -> list[str]:
    """kube-proxy's chains and tables that exist on this machine now, as 'TOOL TABLE CHAIN'."""
    found: list[str] = []
    for save in ("iptables-save", "ip6tables-save"):
        if shutil.which(save) is None:
            continue
        result = subprocess.run([save], capture_output=True, text=True, check=False, timeout=30)
        if result.returncode != 0:
            # A kernel without IPv6 netfilter has nothing kube-proxy could have left there.
            continue
        table = ""
        for line in result.stdout.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith(f":{CHAIN_PREFIX}"):
                found.append(f"{save} {table} {line[1:].split()[0]}")
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True, timeout=30)
    for line in tables.stdout.splitlines():
        # "table ip kube-proxy"
        parts = line.split()
        if len(parts) == 3 and parts[2] == NFT_TABLE:
            found.append(f"nft {parts[1]} {NFT_TABLE}")
    return found


def _delete_remaining_chains() -> None:
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            continue
        saved = subprocess.run([f"{tool}-save"], capture_output=True, text=True, check=False, timeout=30)
        if saved.returncode != 0:
            continue
        table, chains, jumps = "", [], []
        for line in saved.stdout.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith(f":{CHAIN_PREFIX}"):
                chains.append((table, line[1:].split()[0]))
            elif line.startswith("-A "):
                rule = shlex.split(line)
                # Rules in foreign chains that jump into ours must go before our chains can.
                if not rule[1].startswith(CHAIN_PREFIX) and any(
                    rule[i].startswith(CHAIN_PREFIX) for i in range(3, len(rule)) if rule[i - 1] in ("-j", "-g")
                ):
                    jumps.append((table, rule[1:]))
        for table, rule in jumps:
            _run_quietly([tool, "-w", "-t", table, "-D", *rule])
        for table, chain in chains:
            _run_quietly([tool, "-w", "-t", table, "-F", chain])
        for table, chain in chains:
            _run_quietly([tool, "-w", "-t", table, "-X", chain])


def _run_quietly(argv: list[str]) -> None:
    # Failures show up as leftovers in proxy_rules_present(), which stop() reports.
    subprocess.run(argv, capture_output=True, check=False, timeout=30)


def _require_netfilter_tools() -> None:
    if os.geteuid() != 0:
        raise ServiceProxyError("kube-proxy programs the host's netfilter rules and must run as root")
    missing = [name for name in ("iptables", "iptables-save", "iptables-restore", "nft") if not shutil.which(name)]
    if missing:
        raise ServiceProxyError(f"missing {', '.join(missing)}; run `make tools` to install them")


def _take_machine_lock() -> IO[str]:
    LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
    handle = open(LOCK_PATH, "a+")  # noqa: SIM115 - held open for kube-proxy's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "unknown"
        handle.close()
        raise ServiceProxyError(
            f"another {CLUSTER_NAME} cluster runs kube-proxy on this machine ({owner}); service rules are "
            "machine-wide, so only one cluster with networking can run at a time"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return handle
