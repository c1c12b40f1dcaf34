"""The one-machine cluster: the control plane plus node agents, supervised together.

`LocalCluster` is what `ganforge local up` runs in the background and what the test fixtures run
in-process. It restarts a node agent that dies (as systemd restarts kubelet), except while a node
is being reclaimed, and on stop it removes every process, network namespace and veth it made.
"""

from __future__ import annotations

import logging
import shutil
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from kubernetes import client, config

from ganforge.local import tools
from ganforge.local.cluster_services import ClusterNetwork
from ganforge.local.control_plane import ControlPlane
from ganforge.local.monitoring import LocalPrometheus
from ganforge.local.node.agent import NodeConfig
from ganforge.local.node.network import teardown_pod_network
from ganforge.local.node.pod_worker import pod_shm_dir
from ganforge.local.processes import MARKER_ENV, ManagedProcess, kill_marked
from ganforge.local.provisioner import LocalStorage
from ganforge.local.reclaim import delete_node, evict_node_pods, taint_for_reclaim, wait_until_drained

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeSpec:
    name: str
    spot: bool = False
    cpu: str = "4"
    memory: str = "16Gi"
    gpus: int = 0


DEFAULT_NODES = (NodeSpec("ondemand-1"), NodeSpec("spot-1", spot=True, gpus=2))


@dataclass(eq=False)
class LocalNode:
    spec: NodeSpec
    config_path: Path
    process: ManagedProcess
    state_dir: Path
    reclaiming: bool = False


@dataclass
class LocalCluster:
    workdir: Path
    nodes: tuple[NodeSpec, ...] = DEFAULT_NODES
    with_services: bool = True
    """kube-proxy, CoreDNS and the volume provisioner. Service rules are machine-wide, so only one
    cluster on a machine can have them; a second one (a test of start/stop) runs without."""
    first_node_index: int = 1
    """Nodes are numbered from here, and node N owns the pod subnet 10.244.N.0/24: two clusters on
    one machine with disjoint numbers never hand out the same pod address."""
    plane: ControlPlane = field(init=False)
    agents: dict[str, LocalNode] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.plane = ControlPlane(self.workdir / "control-plane")
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._lock = threading.RLock()
        self.network: ClusterNetwork | None = None
        self.storage: LocalStorage | None = None
        self.prometheus: LocalPrometheus | None = None

    @property
    def kubeconfig(self) -> Path:
        return self.plane.admin_kubeconfig

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.plane.start()
        try:
            for index, spec in enumerate(self.nodes, start=self.first_node_index):
                self._add_node(index, spec)
            self._supervisor = threading.Thread(target=self._supervise, name="node-supervisor", daemon=True)
            self._supervisor.start()
            if not self.with_services:
                return
            # kube-proxy reports as the first node; one proxy serves every node on this machine.
            self.network = ClusterNetwork(self.plane, node_name=self.nodes[0].name)
            self.network.start()
            self.storage = LocalStorage(self.plane)
            self.storage.start()
            self.prometheus = LocalPrometheus(self.plane)
            self.prometheus.start()
        except BaseException:
            self.stop()
            raise

    def _add_node(self, index: int, spec: NodeSpec) -> None:
        state_dir = self.workdir / "nodes" / spec.name
        state_dir.mkdir(parents=True, exist_ok=True)
        kubeconfig = self.plane.issue_client_kubeconfig(
            f"node-{spec.name}", f"system:node:{spec.name}", ("system:nodes",)
        )
        cfg = NodeConfig(
            name=spec.name, index=index, kubeconfig=str(kubeconfig), state_dir=str(state_dir),
            host_ip=self.plane.advertise_address, kubelet_version=tools.versions().kubernetes,
            cpu=spec.cpu, memory=spec.memory, gpus=spec.gpus, spot=spec.spot,
            env={MARKER_ENV: self.plane.cluster_id, "GANFORGE_NODE": spec.name},
        )
        config_path = state_dir / "node.json"
        cfg.write(config_path)
        process = self._agent_process(spec.name, config_path)
        process.start()
        self.agents[spec.name] = LocalNode(spec, config_path, process, state_dir)

    def _agent_process(self, name: str, config_path: Path) -> ManagedProcess:
        env = self.plane.child_env()
        return ManagedProcess(
            f"node-{name}",
            [sys.executable, "-m", "ganforge.local.node.agent", "--config", str(config_path)],
            self.plane.workdir / "logs" / f"node-{name}.log",
            env,
        )

    def restart_agent(self, name: str) -> None:
        """Kill the agent outright and start a new one; its containers keep running."""
        with self._lock:
            node = self.agents[name]
            node.process.stop(grace_seconds=0)
            node.process = self._agent_process(name, node.config_path)
            node.process.start()

    def reclaim_node(self, name: str, grace_seconds: int = 30) -> None:
        """What a cloud spot reclaim does to a node: taint, evict with a grace, then the machine
        disappears (agent and every container killed, Node deleted) and a fresh one joins."""
        api = config.new_client_from_config(config_file=str(self.kubeconfig))
        core = client.CoreV1Api(api)
        try:
            taint_for_reclaim(core, name)
            evict_node_pods(core, name, grace_seconds)
            drain_seconds = grace_seconds + 5
            if not wait_until_drained(core, name, timeout=drain_seconds):
                log.warning("node %s not drained within %ss; reclaiming it anyway", name, drain_seconds)
            self.lose_node(name)
            delete_node(core, name)
            log.info("node %s reclaimed; a replacement joins", name)
        finally:
            api.close()
            self.rejoin_node(name)

    def lose_node(self, name: str) -> None:
        """What a machine that dies does: agent and containers gone at once, no eviction, and the
        Node object left behind to go NotReady, as a cloud leaves it until someone deletes it."""
        with self._lock:
            node = self.agents[name]
            node.reclaiming = True
            node.process.stop(grace_seconds=0)
        kill_marked(self.plane.cluster_id, also={"GANFORGE_NODE": name})
        remove_node_sandboxes(node.state_dir)
        log.info("node %s lost", name)

    def rejoin_node(self, name: str) -> None:
        """A lost node's machine comes back: a fresh agent registers under the same name (no-op
        for a node that was not lost)."""
        with self._lock:
            node = self.agents[name]
            if node.reclaiming:
                node.reclaiming = False
                node.process = self._agent_process(name, node.config_path)
                node.process.start()

    def _supervise(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                for name, node in self.agents.items():
                    if not node.reclaiming and not node.process.alive():
                        log.warning("node agent %s exited; restarting it", name)
                        node.process = self._agent_process(name, node.config_path)
                        node.process.start()

    def stop(self) -> None:
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)
        for service in (self.prometheus, self.storage, self.network):
            if service is not None:
                service.stop()
        for name, node in self.agents.items():
            node.process.stop(grace_seconds=5)
            # Containers are detached from their agents on purpose; the markers find every one.
            kill_marked(self.plane.cluster_id, also={"GANFORGE_NODE": name})
        self.plane.stop()
        for node in self.agents.values():
            remove_node_sandboxes(node.state_dir)


def remove_node_sandboxes(state_dir: Path) -> None:
    """Delete the network namespaces and veths of every pod a node's state still records."""
    pods = state_dir / "pods"
    if pods.is_dir():
        for pod_dir in pods.iterdir():
            teardown_pod_network(pod_dir.name)
            shutil.rmtree(pod_shm_dir(pod_dir.name), ignore_errors=True)
        shutil.rmtree(pods, ignore_errors=True)
    shutil.rmtree(state_dir / "ipam", ignore_errors=True)

