"""Pod create -> Running latency on the one-machine cluster, and the node agent's memory.

Run: .venv/bin/python benchmarks/pod_startup.py [--pods 20]
Creates the pods one at a time (so each latency is the runtime's, not a queue's), timing from the
create call to the first watch event that shows phase Running.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from kubernetes import client, config, watch

from ganforge.local.cluster import LocalCluster, NodeSpec


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def wait_running(core: client.CoreV1Api, name: str, version: str) -> None:
    for event in watch.Watch().stream(core.list_namespaced_pod, "default", resource_version=version,
                                      field_selector=f"metadata.name={name}", timeout_seconds=120):
        if event["object"].status.phase == "Running":
            return
    raise TimeoutError(f"pod {name} never reached Running")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir, \
            LocalCluster(Path(workdir), nodes=(NodeSpec("bench"),), with_services=False) as cluster:
        core = client.CoreV1Api(config.new_client_from_config(config_file=str(cluster.kubeconfig)))
        deadline = time.monotonic() + 60
        while not core.list_namespaced_service_account("default").items or not any(
            c.type == "Ready" and c.status == "True" for n in core.list_node().items for c in n.status.conditions or []
        ) or any(t.key == "node.kubernetes.io/not-ready" for n in core.list_node().items for t in n.spec.taints or []):
            if time.monotonic() > deadline:
                raise TimeoutError("the node did not become Ready")
            time.sleep(0.2)
        agent_pid = cluster.agents["bench"].process.pid
        idle_rss = rss_mib(agent_pid)
        latencies = []
        for index in range(args.pods):
            name = f"bench-{index}"
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                   "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["sleep", "3600"]}]}}
            started = time.perf_counter()
            created = core.create_namespaced_pod("default", pod)
            wait_running(core, name, created.metadata.resource_version)
            latencies.append(time.perf_counter() - started)
        busy_rss = rss_mib(agent_pid)
    latencies.sort()
    print(f"pods: {args.pods} (sleep containers, one node)")
    print(f"create -> Running: median {statistics.median(latencies):.3f}s, "
          f"p90 {latencies[int(0.9 * (len(latencies) - 1))]:.3f}s, max {latencies[-1]:.3f}s")
    print(f"node agent RSS: idle {idle_rss:.1f} MiB, with {args.pods} pods running {busy_rss:.1f} MiB")


if __name__ == "__main__":
    main()
