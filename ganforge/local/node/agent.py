"""The node agent: plays kubelet's part for one Node of the one-machine cluster.

It registers the Node (capacity, labels, taints), keeps its Lease fresh, watches the Pods bound
to it and runs each through a PodWorker. It talks to the apiserver as `system:node:<name>`, so the
Node authorizer and NodeRestriction limit it exactly as they limit kubelet.

Stopping the agent leaves containers running, as stopping kubelet does; a new agent adopts them.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from ganforge.local import provisioner
from ganforge.local.node.environment import Pod
from ganforge.local.node.network import AddressAllocator, node_subnet
from ganforge.local.node.pod_worker import PodWorker
from ganforge.local.node.shim import now_rfc3339
from ganforge.local.node.volumes import decode_binary

log = logging.getLogger("ganforge.local.node")

# Capacity-type convention (docs/local-cluster.md): like AKS spot pools, spot nodes carry a label
# and a NoSchedule taint, so only workloads that opt in with a toleration land there.
CAPACITY_TYPE_LABEL = "node.ganforge.io/capacity-type"
SPOT_TAINT_KEY = "node.ganforge.io/spot"
GPU_RESOURCE = "nvidia.com/gpu"
LEASE_SECONDS = 40
LEASE_RENEW_SECONDS = 5.0
STATUS_HEARTBEAT_SECONDS = 10.0
SYNC_PERIOD_SECONDS = 0.5
STRATEGIC_MERGE = "application/strategic-merge-patch+json"


@dataclass
class NodeConfig:
    name: str
    index: int
    kubeconfig: str
    state_dir: str
    host_ip: str
    kubelet_version: str
    cpu: str = "2"
    memory: str = "8Gi"
    gpus: int = 0
    max_pods: int = 110
    spot: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    """Added to every container's environment (the cluster's process marker among them)."""

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def read(cls, path: Path) -> NodeConfig:
        return cls(**json.loads(path.read_text()))


def _micro_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def node_manifest(cfg: NodeConfig) -> dict[str, Any]:
    labels = {
        "kubernetes.io/hostname": cfg.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": "ganforge-local",
        CAPACITY_TYPE_LABEL: "spot" if cfg.spot else "on-demand",
        **cfg.labels,
    }
    taints = [{"key": SPOT_TAINT_KEY, "value": "true", "effect": "NoSchedule"}] if cfg.spot else []
    subnet = str(node_subnet(cfg.index))
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": cfg.name, "labels": labels},
        "spec": {"podCIDR": subnet, "podCIDRs": [subnet], "taints": taints},
    }


def node_status(cfg: NodeConfig, now: str, since: str) -> dict[str, Any]:
    """`now` is the heartbeat; `since` is when the conditions last changed (agent start)."""
    capacity = {"cpu": cfg.cpu, "memory": cfg.memory, "pods": str(cfg.max_pods), GPU_RESOURCE: str(cfg.gpus),
                "ephemeral-storage": "50Gi"}
    healthy = [("MemoryPressure", "KubeletHasSufficientMemory"), ("DiskPressure", "KubeletHasNoDiskPressure"),
               ("PIDPressure", "KubeletHasSufficientPID")]
    conditions = [
        {"type": kind, "status": "False", "reason": reason, "message": "ok", "lastHeartbeatTime": now,
         "lastTransitionTime": since}
        for kind, reason in healthy
    ]
    conditions.append({"type": "Ready", "status": "True", "reason": "KubeletReady",
                       "message": "ganforge node agent is posting ready status", "lastHeartbeatTime": now,
                       "lastTransitionTime": since})
    return {
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": conditions,
        "addresses": [{"type": "InternalIP", "address": cfg.host_ip}, {"type": "Hostname", "address": cfg.name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": platform.release(),
            "osImage": "ganforge local node", "containerRuntimeVersion": "ganforge://0.1",
            "kubeletVersion": cfg.kubelet_version, "kubeProxyVersion": cfg.kubelet_version,
            "operatingSystem": "linux", "architecture": "amd64",
        },
    }


class NodeAgent:
    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.node_name = cfg.name
        self.host_ip = cfg.host_ip
        self.base_env: Mapping[str, str] = {"HOME": "/root", **cfg.env}
        self.api = config.new_client_from_config(config_file=cfg.kubeconfig)
        self.core = client.CoreV1Api(self.api)
        self.coordination = client.CoordinationV1Api(self.api)
        state = Path(cfg.state_dir)
        self.pods_dir = state / "pods"
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        self.allocator = AddressAllocator(node_subnet(cfg.index), state / "ipam")
        self.workers: dict[str, PodWorker] = {}
        self.pods: dict[str, Pod] = {}
        self.listed = threading.Event()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.node_uid = ""
        self.started_at = now_rfc3339()

    # -- API helpers used by pod workers (NodeServices) -----------------------------------------

    def _read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        reader = self.core.read_namespaced_config_map if kind == "ConfigMap" else self.core.read_namespaced_secret
        try:
            response = reader(name, namespace, _preload_content=False)
        except ApiException as error:
            if error.status in (403, 404):
                return None
            raise
        value: dict[str, Any] = json.loads(response.data)
        return value

    def binary_data(self, kind: str, namespace: str, name: str) -> Mapping[str, bytes] | None:
        obj = self._read(kind, namespace, name)
        return None if obj is None else decode_binary(kind, obj)

    def object_data(self, kind: str, namespace: str, name: str) -> Mapping[str, str] | None:
        data = self.binary_data(kind, namespace, name)
        return None if data is None else {key: value.decode(errors="replace") for key, value in data.items()}

    def claim_host_path(self, namespace: str, claim: str) -> str | None:
        return provisioner.claim_host_path(self.core, namespace, claim)

    def request_token(self, pod: Pod, audience: str | None, seconds: int) -> str:
        account = pod["spec"].get("serviceAccountName") or "default"
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(
                audiences=[audience] if audience else [],
                expiration_seconds=seconds,
                bound_object_ref=client.V1BoundObjectReference(
                    api_version="v1", kind="Pod", name=pod["metadata"]["name"], uid=pod["metadata"]["uid"]
                ),
            )
        )
        token: str = self.core.create_namespaced_service_account_token(
            account, pod["metadata"]["namespace"], request
        ).status.token
        return token

    def patch_pod_status(self, pod: Pod, status: Mapping[str, Any]) -> None:
        metadata = pod["metadata"]
        try:
            self.core.patch_namespaced_pod_status(metadata["name"], metadata["namespace"], {"status": status},
                                                  _content_type=STRATEGIC_MERGE)
        except ApiException as error:
            if error.status != 404:
                raise

    def delete_pod_finally(self, pod: Pod) -> None:
        metadata = pod["metadata"]
        options = client.V1DeleteOptions(grace_period_seconds=0,
                                         preconditions=client.V1Preconditions(uid=metadata["uid"]))
        try:
            self.core.delete_namespaced_pod(metadata["name"], metadata["namespace"], body=options)
        except ApiException as error:
            if error.status not in (404, 409):
                raise

    # -- node registration and heartbeats -------------------------------------------------------

    def register(self) -> None:
        try:
            node = self.core.create_node(node_manifest(self.cfg))
        except ApiException as error:
            if error.status != 409:
                raise
            node = self.core.read_node(self.cfg.name)
        self.node_uid = node.metadata.uid
        self.post_status()
        log.info("node %s registered (uid %s)", self.cfg.name, self.node_uid)

    def post_status(self) -> None:
        self.core.patch_node_status(self.cfg.name, {"status": node_status(self.cfg, now_rfc3339(), self.started_at)},
                                    _content_type=STRATEGIC_MERGE)

    def renew_lease(self) -> None:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.cfg.name,
                "namespace": "kube-node-lease",
                # Owned by the Node, so deleting the Node (a reclaimed machine) deletes the Lease.
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": self.cfg.name, "uid": self.node_uid}],
            },
            "spec": {"holderIdentity": self.cfg.name, "leaseDurationSeconds": LEASE_SECONDS,
                     "renewTime": _micro_time()},
        }
        try:
            self.coordination.patch_namespaced_lease(self.cfg.name, "kube-node-lease", body,
                                                     _content_type="application/merge-patch+json")
        except ApiException as error:
            if error.status != 404:
                raise
            self.coordination.create_namespaced_lease("kube-node-lease", body)

    def _heartbeat_loop(self) -> None:
        last_status = time.monotonic()
        while not self.stopping.wait(LEASE_RENEW_SECONDS):
            try:
                self.renew_lease()
                if time.monotonic() - last_status >= STATUS_HEARTBEAT_SECONDS:
                    self.post_status()
                    last_status = time.monotonic()
            except Exception:
                log.exception("heartbeat failed")

    # -- pod watch ------------------------------------------------------------------------------

    def _watch_loop(self) -> None:
        selector = f"spec.nodeName={self.cfg.name}"
        while not self.stopping.is_set():
            try:
                response = self.core.list_pod_for_all_namespaces(field_selector=selector, _preload_content=False)
                listing = json.loads(response.data)
                with self.lock:
                    self.pods = {pod["metadata"]["uid"]: pod for pod in listing["items"]}
                self.listed.set()
                self.wake.set()
                stream = watch.Watch().stream(
                    self.core.list_pod_for_all_namespaces, field_selector=selector,
                    resource_version=listing["metadata"]["resourceVersion"], timeout_seconds=60,
                )
                for event in stream:
                    pod = event["raw_object"]
                    if pod.get("kind") == "Status":
                        break
                    with self.lock:
                        if event["type"] == "DELETED":
                            self.pods.pop(pod["metadata"]["uid"], None)
                        else:
                            self.pods[pod["metadata"]["uid"]] = pod
                    self.wake.set()
                    if self.stopping.is_set():
                        return
            except Exception:
                if not self.stopping.is_set():
                    log.exception("pod watch failed; listing again")
                    time.sleep(1)

    # -- the sync loop --------------------------------------------------------------------------

    def adopt_or_clean(self) -> None:
        """After a restart: keep workers for pods still bound here, kill what the API forgot."""
        with self.lock:
            known = set(self.pods)
        for pod_dir in self.pods_dir.iterdir():
            if pod_dir.name in known:
                continue
            try:
                stale = json.loads((pod_dir / "pod.json").read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                stale = None
            log.info("cleaning up pod %s, no longer bound to this node", pod_dir.name)
            if stale is not None:
                stale.setdefault("spec", {"containers": []})
                stale["spec"]["containers"] = [{"name": p.name} for p in (pod_dir / "containers").glob("*")]
                worker = PodWorker(stale, pod_dir, self.allocator, self)
                worker.kill_everything()
                worker.forget()

    def sync_once(self) -> None:
        with self.lock:
            pods = dict(self.pods)
        for uid, pod in pods.items():
            worker = self.workers.get(uid)
            if worker is None:
                worker = self.workers[uid] = PodWorker(pod, self.pods_dir / uid, self.allocator, self)
            worker.update(pod)
            try:
                worker.sync()
            except Exception:
                log.exception("sync of pod %s failed", worker.name)
        for uid in list(self.workers):
            worker = self.workers[uid]
            if uid not in pods or worker.finished:
                if not worker.finished:
                    # Gone from the API without our final delete (force-deleted, node removed).
                    log.info("pod %s deleted from the API; stopping its containers", worker.name)
                    worker.kill_everything()
                    worker.forget()
                del self.workers[uid]

    def run(self) -> None:
        self.register()
        self.renew_lease()
        threads = [threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True),
                   threading.Thread(target=self._watch_loop, name="pod-watch", daemon=True)]
        for thread in threads:
            thread.start()
        self.listed.wait()
        self.adopt_or_clean()
        while not self.stopping.is_set():
            self.wake.wait(SYNC_PERIOD_SECONDS)
            self.wake.clear()
            self.sync_once()

    def stop(self, _signum: int = 0, _frame: FrameType | None = None) -> None:
        self.stopping.set()
        self.wake.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ganforge.local.node.agent")
    parser.add_argument("--config", required=True, type=Path, help="node configuration (JSON)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    agent = NodeAgent(NodeConfig.read(args.config))
    signal.signal(signal.SIGTERM, agent.stop)
    signal.signal(signal.SIGINT, agent.stop)
    agent.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
