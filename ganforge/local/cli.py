"""`ganforge local up | down | delete | status | install | logs | preempt`: the one-machine cluster.

The lifecycle is the one of a stopped and started machine:
- `up` starts a detached supervisor (`ganforge local serve`) that owns the cluster, waits until the
  nodes are Ready and prints how to point kubectl at it. If a stopped cluster's state is there, it
  is that same cluster that comes back: same etcd data, volumes, CA and ServiceAccount keys, so
  every object, kubeconfig and token survives; pods are started again, as after a node reboot.
- `down` stops the cluster (every process, pod network namespace and veth) and keeps its state.
- `delete` stops it if needed and removes all of its state; the next `up` starts a fresh cluster.
Everything lives under one state directory (default ~/.local/share/ganforge/local, or
$GANFORGE_LOCAL_DIR); the kubeconfig is always `<state>/kubeconfig`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ganforge.local.cluster import LocalCluster, remove_node_sandboxes
from ganforge.local.processes import kill_marked, processes_with_marker
from ganforge.local.state_files import read_json

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def state_dir() -> Path:
    configured = os.environ.get("GANFORGE_LOCAL_DIR")
    return Path(configured) if configured else Path.home() / ".local" / "share" / "ganforge" / "local"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def serve(root: Path, with_services: bool, first_node_index: int) -> int:
    """Run the cluster in the foreground until SIGTERM; `up` starts this detached."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    cluster = LocalCluster(root / "cluster", with_services=with_services, first_node_index=first_node_index)
    stop = False

    def request_stop(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    cluster.start()
    try:
        (root / "kubeconfig").write_bytes(cluster.kubeconfig.read_bytes())
        (root / "kubeconfig").chmod(0o600)
        prometheus = cluster.prometheus.url if cluster.prometheus is not None else None
        (root / "cluster.json").write_text(json.dumps({"clusterId": cluster.plane.cluster_id,
                                                       "nodes": list(cluster.agents), "prometheus": prometheus}))
        (root / "ready").touch()
        while not stop:
            for request in (root / "cluster" / "nodes").glob("*/reclaim-request.json"):
                spec = json.loads(request.read_text())
                request.unlink()
                cluster.reclaim_node(request.parent.name, int(spec["grace"]))
                (request.parent / "reclaim-done").touch()
            time.sleep(0.5)
    finally:
        (root / "ready").unlink(missing_ok=True)
        cluster.stop()
    return EXIT_OK


def _first_node_index(root: Path, requested: int | None) -> int:
    """A node's number fixes its pod subnet (an immutable Node field), so a cluster keeps the
    numbering it was created with; asking a kept cluster for another one is an error."""
    saved = read_json(root / "options.json") or {}
    if "firstNodeIndex" in saved:
        kept = int(saved["firstNodeIndex"])
        if requested is not None and requested != kept:
            raise ValueError(f"--first-node-index {requested}: the cluster kept in {root} numbers its nodes from "
                             f"{kept}; `ganforge local delete` it first to renumber")
        return kept
    chosen = 1 if requested is None else requested
    root.mkdir(parents=True, exist_ok=True)
    (root / "options.json").write_text(json.dumps({"firstNodeIndex": chosen}))
    return chosen


def up(root: Path, timeout: float, with_services: bool, first_node_index: int | None = None) -> int:
    pid_info = read_json(root / "supervisor.json")
    if pid_info and _pid_alive(int(str(pid_info["pid"]))) and (root / "ready").exists():
        print(f"already up; export KUBECONFIG={root / 'kubeconfig'}")
        return EXIT_OK
    resuming = (root / "cluster" / "control-plane" / "etcd").is_dir()
    try:
        index = _first_node_index(root, first_node_index)
    except ValueError as error:
        print(f"ganforge local up: {error}", file=sys.stderr)
        return EXIT_USAGE
    (root / "ready").unlink(missing_ok=True)
    with open(root / "supervisor.log", "ab") as log_file:
        serve_args = ["serve", "--first-node-index", str(index)]
        if not with_services:
            serve_args.append("--without-services")
        process = subprocess.Popen([sys.executable, "-m", "ganforge.local.cli", *serve_args],
                                   stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env={**os.environ, "GANFORGE_LOCAL_DIR": str(root)})
    (root / "supervisor.json").write_text(json.dumps({"pid": process.pid}))
    deadline = time.monotonic() + timeout
    while not (root / "ready").exists():
        if process.poll() is not None or time.monotonic() > deadline:
            print(f"ganforge local: the cluster did not come up; see {root / 'supervisor.log'}", file=sys.stderr)
            down(root)
            return EXIT_FAILED
        time.sleep(0.5)
    print("ganforge local cluster is up" + (f" again, with the state kept in {root}." if resuming else "."))
    print(f"Point kubectl at it with:  export KUBECONFIG={root / 'kubeconfig'}")
    _print_prometheus(root)
    return EXIT_OK


def _print_prometheus(root: Path) -> None:
    url = (read_json(root / "cluster.json") or {}).get("prometheus")
    if url:
        print(f"Prometheus (scrapes the operator, trainers, Triton and the gateway; ganforge's alerts loaded): {url}")


def down(root: Path) -> int:
    pid_info = read_json(root / "supervisor.json")
    if pid_info:
        pid = int(str(pid_info["pid"]))
        if _pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 60
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
    # Whatever the supervisor could not stop (it may have been killed) is found by its marker.
    info = read_json(root / "cluster.json")
    if info:
        kill_marked(str(info["clusterId"]))
    for node_dir in (root / "cluster" / "nodes").glob("*"):
        remove_node_sandboxes(node_dir)
    for name in ("ready", "supervisor.json", "cluster.json"):
        (root / name).unlink(missing_ok=True)
    print(f"ganforge local cluster is down; its state is kept in {root} (`ganforge local up` brings it back, "
          "`ganforge local delete` removes it).")
    return EXIT_OK


def delete(root: Path) -> int:
    if not root.exists():
        print(f"ganforge local: nothing to delete at {root}")
        return EXIT_OK
    down(root)
    shutil.rmtree(root)
    print(f"ganforge local cluster deleted ({root} removed).")
    return EXIT_OK


def status(root: Path) -> int:
    info = read_json(root / "cluster.json")
    if not info or not (root / "ready").exists():
        print("ganforge local cluster is not running.")
        return EXIT_FAILED
    processes = processes_with_marker(str(info["clusterId"]))
    print(f"ganforge local cluster {info['clusterId']} is up ({len(processes)} processes)")
    nodes = info.get("nodes")
    if isinstance(nodes, list):
        print("nodes: " + ", ".join(map(str, nodes)))
    print(f"export KUBECONFIG={root / 'kubeconfig'}")
    _print_prometheus(root)
    return EXIT_OK


def logs(root: Path, pod: str, namespace: str, container: str | None) -> int:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(root / "kubeconfig"))
    found = client.CoreV1Api(api).read_namespaced_pod(pod, namespace)
    uid = found.metadata.uid
    name = container or found.spec.containers[0].name
    for pod_dir in (root / "cluster" / "nodes").glob(f"*/pods/{uid}"):
        files = sorted((pod_dir / "logs" / name).glob("*.log"), key=lambda p: int(p.stem))
        if files:
            sys.stdout.write(files[-1].read_text(errors="replace"))
            return EXIT_OK
    print(f"no logs for container {name!r} of pod {namespace}/{pod} on this machine", file=sys.stderr)
    return EXIT_FAILED


def preempt(root: Path, node: str, grace: int, timeout: float) -> int:
    node_dir = root / "cluster" / "nodes" / node
    if not node_dir.is_dir():
        print(f"ganforge local: no node named {node!r}", file=sys.stderr)
        return EXIT_USAGE
    (node_dir / "reclaim-done").unlink(missing_ok=True)
    (node_dir / "reclaim-request.json").write_text(json.dumps({"grace": grace}))
    deadline = time.monotonic() + timeout
    while not (node_dir / "reclaim-done").exists():
        if time.monotonic() > deadline:
            print("ganforge local: the reclaim did not finish in time", file=sys.stderr)
            return EXIT_FAILED
        time.sleep(0.3)
    print(f"node {node} reclaimed (grace {grace}s) and replaced")
    return EXIT_OK


def install_operator(root: Path) -> int:
    from ganforge.local.install import (
        GATEWAY_NAME,
        GATEWAY_NAMESPACE,
        OPERATOR_NAMESPACE,
        InstallError,
        install,
        install_gateway,
    )
    from ganforge.local.tools import ToolMissingError

    if not (root / "ready").exists():
        print("ganforge local install: the cluster is not up (run `ganforge local up`)", file=sys.stderr)
        return EXIT_FAILED
    try:
        install(root / "kubeconfig")
        install_gateway(root / "kubeconfig")
    except (InstallError, ToolMissingError) as error:
        print(f"ganforge local install: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(f"ganforge operator is running in namespace {OPERATOR_NAMESPACE}")
    print(f"Gateway {GATEWAY_NAMESPACE}/{GATEWAY_NAME} (Traefik) routes GANInferenceServices that name it "
          f"in spec.gateway")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ganforge local", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    up_cmd = commands.add_parser("up", help="start the cluster in the background")
    up_cmd.add_argument("--timeout", type=float, default=180)
    commands.add_parser("down", help="stop the cluster and keep its state; `up` brings the same cluster back")
    commands.add_parser("delete", help="stop the cluster and remove all of its state; the next `up` is fresh")
    commands.add_parser("status", help="is it up, and where is the kubeconfig")
    serve_cmd = commands.add_parser("serve", help="run the cluster in the foreground (what `up` starts)")
    for command in (up_cmd, serve_cmd):
        command.add_argument("--without-services", action="store_true",
                             help="no kube-proxy, CoreDNS or volume provisioner (they are machine-wide: "
                                  "use this when another cluster on this machine has them)")
    up_cmd.add_argument("--first-node-index", type=int, default=None,
                        help="number the nodes from N (node N owns pod subnet 10.244.N.0/24), so a second "
                             "cluster on this machine never shares pod addresses; kept with the cluster")
    serve_cmd.add_argument("--first-node-index", type=int, default=1)
    commands.add_parser("install", help="apply ganforge's CRDs, RBAC and operator, the Gateway API CRDs and "
                                        "Traefik; wait until they run")
    logs_cmd = commands.add_parser("logs", help="print a pod's container log")
    logs_cmd.add_argument("pod")
    logs_cmd.add_argument("-n", "--namespace", default="default")
    logs_cmd.add_argument("-c", "--container")
    preempt_cmd = commands.add_parser("preempt", help="spot reclaim drill on a node")
    preempt_cmd.add_argument("node")
    preempt_cmd.add_argument("--grace", type=int, default=30, help="seconds between eviction and node loss")
    preempt_cmd.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args(argv)
    root = state_dir()
    if args.command == "up":
        return up(root, args.timeout, not args.without_services, args.first_node_index)
    if args.command == "down":
        return down(root)
    if args.command == "delete":
        return delete(root)
    if args.command == "status":
        return status(root)
    if args.command == "serve":
        return serve(root, not args.without_services, args.first_node_index)
    if args.command == "install":
        return install_operator(root)
    if args.command == "logs":
        return logs(root, args.pod, args.namespace, args.container)
    return preempt(root, args.node, args.grace, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
