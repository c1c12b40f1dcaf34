"""The node runtime runs real pods as real processes, scheduled by the real control plane."""

from __future__ import annotations

import json
import os
import socket
import textwrap
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from ganforge.local.cluster import LocalCluster, NodeSpec
from ganforge.local.node.agent import CAPACITY_TYPE_LABEL, SPOT_TAINT_KEY
from ganforge.local.node.network import host_veth_name, list_host_veths, list_netns, netns_name
from ganforge.local.node.pod_worker import pod_shm_dir
from ganforge.local.processes import processes_with_marker
from tests.helpers import eventually

SPOT_TOLERATION = {"key": SPOT_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}


def python_pod(name: str, script: str, restart: str = "Never", **spec: Any) -> dict[str, Any]:
    container = {"name": "main", "image": "python:3.11", "command": ["python", "-c", textwrap.dedent(script)]}
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": restart, "containers": [container], **spec},
    }


def read_pod(core: client.CoreV1Api, namespace: str, name: str) -> client.V1Pod | None:
    try:
        return core.read_namespaced_pod(name, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def phase_is(core: client.CoreV1Api, namespace: str, name: str, *phases: str):  # type: ignore[no-untyped-def]
    def probe() -> client.V1Pod | None:
        pod = read_pod(core, namespace, name)
        return pod if pod is not None and pod.status.phase in phases else None

    return probe


def test_nodes_register_with_capacity_labels_and_spot_taint(local_core: client.CoreV1Api) -> None:
    nodes = {node.metadata.name: node for node in local_core.list_node().items}
    assert set(nodes) == {"ondemand-1", "spot-1"}
    spot = nodes["spot-1"]
    assert spot.metadata.labels[CAPACITY_TYPE_LABEL] == "spot"
    assert [(t.key, t.effect) for t in spot.spec.taints] == [(SPOT_TAINT_KEY, "NoSchedule")]
    assert spot.status.capacity["nvidia.com/gpu"] == "2"
    assert nodes["ondemand-1"].metadata.labels[CAPACITY_TYPE_LABEL] == "on-demand"
    assert not nodes["ondemand-1"].spec.taints
    for node in nodes.values():
        ready = next(c for c in node.status.conditions if c.type == "Ready")
        assert ready.status == "True"


def test_exit_code_is_reported_and_on_failure_restarts(local_core: client.CoreV1Api, local_namespace: str) -> None:
    core, ns = local_core, local_namespace
    core.create_namespaced_pod(ns, python_pod("exits-3", "import sys; sys.exit(3)"))
    pod = eventually(phase_is(core, ns, "exits-3", "Failed"), timeout=60, what="pod Failed")
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 3
    assert pod.status.container_statuses[0].restart_count == 0

    core.create_namespaced_pod(ns, python_pod("restarts", "import sys; sys.exit(3)", restart="OnFailure"))

    def restarted_twice() -> bool:
        pod = read_pod(core, ns, "restarts")
        return bool(pod and pod.status.container_statuses and pod.status.container_statuses[0].restart_count >= 2)

    eventually(restarted_twice, timeout=60, what="restartCount >= 2 under OnFailure")
    pod = read_pod(core, ns, "restarts")
    assert pod is not None
    assert pod.status.container_statuses[0].last_state.terminated.exit_code == 3


def test_env_downward_api_configmap_volume_and_working_dir(
    local_core: client.CoreV1Api, local_namespace: str, tmp_path: Path
) -> None:
    core, ns = local_core, local_namespace
    core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="settings"),
                                                             data={"greeting": "hello"}))
    script = """
        import os, pathlib
        out = pathlib.Path(os.environ["OUT"])
        lines = [os.environ["POD_NAME"], os.environ["POD_NS"], os.environ["POD_IP"], os.environ["NODE"],
                 os.environ["GREETING"], pathlib.Path("/etc/settings/greeting").read_text(), os.getcwd(),
                 os.environ["KUBERNETES_SERVICE_HOST"],
                 str(pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount/token").stat().st_size > 0)]
        out.write_text("\\n".join(lines))
    """
    out = tmp_path / "env.txt"
    field = lambda path: {"valueFrom": {"fieldRef": {"fieldPath": path}}}  # noqa: E731
    pod = python_pod("env", script, container={
        "env": [{"name": "OUT", "value": str(out)}, {"name": "POD_NAME", **field("metadata.name")},
                {"name": "POD_NS", **field("metadata.namespace")}, {"name": "POD_IP", **field("status.podIP")},
                {"name": "NODE", **field("spec.nodeName")},
                {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "greeting"}}}],
        "volumeMounts": [{"name": "settings", "mountPath": "/etc/settings", "readOnly": True}],
        "workingDir": str(tmp_path),
    }, volumes=[{"name": "settings", "configMap": {"name": "settings"}}])
    core.create_namespaced_pod(ns, pod)
    done = eventually(phase_is(core, ns, "env", "Succeeded", "Failed"), timeout=60, what="pod to finish")
    assert done.status.phase == "Succeeded", (done.status.reason, done.status.message)
    name, namespace, pod_ip, node, greeting, mounted, cwd, service_host, token = out.read_text().split("\n")
    assert (name, namespace, greeting, mounted, cwd) == ("env", ns, "hello", "hello", str(tmp_path))
    assert pod_ip == done.status.pod_ip and pod_ip.startswith("10.244.")
    assert node == done.spec.node_name == "ondemand-1"
    assert service_host == "10.96.0.1"
    assert token == "True"


def test_configmap_edited_while_the_pod_runs_reaches_its_mounted_file(
    local_core: client.CoreV1Api, local_namespace: str, tmp_path: Path
) -> None:
    core, ns = local_core, local_namespace
    core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="live"),
                                                             data={"mode": "first"}))
    # The pod copies what it reads from its mount to a host file once a second until it sees "second".
    script = """
        import os, pathlib, time
        out = pathlib.Path(os.environ["OUT"])
        while True:
            seen = pathlib.Path("/etc/live/mode").read_text()
            out.write_text(seen)
            if seen == "second":
                break
            time.sleep(1)
    """
    out = tmp_path / "seen.txt"
    pod = python_pod("watcher", script, container={
        "env": [{"name": "OUT", "value": str(out)}],
        "volumeMounts": [{"name": "live", "mountPath": "/etc/live", "readOnly": True}],
    }, volumes=[{"name": "live", "configMap": {"name": "live"}}])
    core.create_namespaced_pod(ns, pod)
    eventually(lambda: out.exists() and out.read_text() == "first", timeout=60, what="the pod reading 'first'")
    edited = time.monotonic()
    core.patch_namespaced_config_map("live", ns, {"data": {"mode": "second"}})
    done = eventually(phase_is(core, ns, "watcher", "Succeeded", "Failed"), timeout=60,
                      what="the edit to reach the running pod")
    print(f"\nConfigMap edit -> seen in the running pod: {time.monotonic() - edited:.1f} s")
    assert done.status.phase == "Succeeded" and out.read_text() == "second"
    assert done.status.container_statuses[0].restart_count == 0


def test_init_containers_run_in_order_to_success_before_the_app(
    local_core: client.CoreV1Api, local_namespace: str, tmp_path: Path
) -> None:
    core, ns = local_core, local_namespace
    shared = {"name": "work", "mountPath": "/scratch"}
    init = [
        {"name": "first", "image": "python:3.11", "volumeMounts": [shared],
         "command": ["python", "-c", "import pathlib; pathlib.Path('/scratch/order').write_text('first')"]},
        {"name": "second", "image": "python:3.11", "volumeMounts": [shared],
         "command": ["python", "-c", "import pathlib; p = pathlib.Path('/scratch/order'); "
                     "p.write_text(p.read_text() + ',second')"]},
    ]
    out = tmp_path / "seen.txt"
    pod = python_pod("initialised", """
        import os, pathlib
        pathlib.Path(os.environ["OUT"]).write_text(pathlib.Path("/scratch/order").read_text())
    """, container={"env": [{"name": "OUT", "value": str(out)}], "volumeMounts": [shared]},
        initContainers=init, volumes=[{"name": "work", "emptyDir": {}}])
    core.create_namespaced_pod(ns, pod)
    done = eventually(phase_is(core, ns, "initialised", "Succeeded", "Failed"), timeout=90, what="pod to finish")
    assert done.status.phase == "Succeeded", (done.status.reason, done.status.message)
    assert out.read_text() == "first,second"
    statuses = done.status.init_container_statuses
    assert [s.name for s in statuses] == ["first", "second"]
    assert all(s.state.terminated.exit_code == 0 and s.ready for s in statuses)
    assert {c.type: c.status for c in done.status.conditions}["Initialized"] == "True"


def test_a_failed_init_container_fails_a_never_restart_pod_and_the_app_never_runs(
    local_core: client.CoreV1Api, local_namespace: str, tmp_path: Path
) -> None:
    core, ns = local_core, local_namespace
    marker = tmp_path / "app-ran"
    init = [{"name": "check", "image": "python:3.11", "terminationMessagePolicy": "FallbackToLogsOnError",
             "command": ["python", "-c", "import sys; print('revision does not verify'); sys.exit(9)"]}]
    pod = python_pod("blocked", f"open({str(marker)!r}, 'w').write('ran')", initContainers=init)
    core.create_namespaced_pod(ns, pod)
    failed = eventually(phase_is(core, ns, "blocked", "Failed"), timeout=90, what="the pod to fail")
    assert failed.status.reason == "Init:Error"
    assert "revision does not verify" in failed.status.message
    terminated = failed.status.init_container_statuses[0].state.terminated
    assert terminated.exit_code == 9 and "revision does not verify" in terminated.message
    assert failed.status.container_statuses[0].state.terminated is None and not marker.exists()


def test_pre_stop_sleep_delays_sigterm_within_the_grace(
    local_core: client.CoreV1Api, local_namespace: str, tmp_path: Path
) -> None:
    core, ns = local_core, local_namespace
    claim_with_volume(core, ns, tmp_path / "pvc")
    script = """
        import pathlib, signal, sys, time
        def on_term(signum, frame):
            pathlib.Path("/data/term").write_text(repr(time.time()))
            sys.exit(0)
        signal.signal(signal.SIGTERM, on_term)
        pathlib.Path("/data/started").write_text("yes")
        while True:
            time.sleep(0.1)
    """
    pod = python_pod("draining", script, restart="Always", container={
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        "lifecycle": {"preStop": {"sleep": {"seconds": 3}}},
    }, volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}], terminationGracePeriodSeconds=20)
    core.create_namespaced_pod(ns, pod)
    eventually(lambda: (tmp_path / "pvc" / "started").exists(), timeout=60, what="the pod to start")
    deleted_at = time.time()
    core.delete_namespaced_pod("draining", ns)
    term = eventually(lambda: (tmp_path / "pvc" / "term").exists() and (tmp_path / "pvc" / "term"), timeout=30,
                      what="SIGTERM after the preStop sleep")
    delay = float(term.read_text()) - deleted_at
    assert 3.0 <= delay < 15.0, delay
    eventually(lambda: read_pod(core, ns, "draining") is None, timeout=30, what="the pod to go")


def test_each_pod_has_its_own_dev_shm_removed_with_it(local_core: client.CoreV1Api, local_namespace: str) -> None:
    core, ns = local_core, local_namespace
    script = """
        import pathlib, time
        pathlib.Path("/dev/shm/region").write_text("mine")
        print(sorted(p.name for p in pathlib.Path("/dev/shm").iterdir()), flush=True)
        time.sleep(600)
    """
    core.create_namespaced_pod(ns, python_pod("shm-user", script))
    pod = eventually(phase_is(core, ns, "shm-user", "Running"), timeout=60, what="the pod to run")
    region = pod_shm_dir(pod.metadata.uid) / "region"
    eventually(lambda: region.exists(), timeout=30, what="the region in the pod's own /dev/shm")
    assert region.read_text() == "mine" and not Path("/dev/shm/region").exists()
    core.delete_namespaced_pod("shm-user", ns, grace_period_seconds=1)
    eventually(lambda: read_pod(core, ns, "shm-user") is None, timeout=60, what="the pod to go")
    assert not pod_shm_dir(pod.metadata.uid).exists()


def test_unknown_image_fails_the_pod_with_a_clear_reason(local_core: client.CoreV1Api, local_namespace: str) -> None:
    pod = python_pod("mystery", "pass")
    pod["spec"]["containers"][0]["image"] = "example.com/not-in-the-table:1"
    local_core.create_namespaced_pod(local_namespace, pod)
    failed = eventually(phase_is(local_core, local_namespace, "mystery", "Failed"), timeout=60, what="Failed")
    assert failed.status.reason == "ImageNotInLocalTable"
    assert "example.com/not-in-the-table:1" in failed.status.message


def test_probes_drive_readiness_and_liveness(local_core: client.CoreV1Api, local_namespace: str,
                                             tmp_path: Path) -> None:
    core, ns = local_core, local_namespace
    healthy = tmp_path / "healthy"
    healthy.touch()
    server = """
        import http.server, os, pathlib
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                ok = pathlib.Path(os.environ["HEALTHY"]).exists()
                self.send_response(200 if ok else 500); self.end_headers()
            def log_message(self, *args): pass
        http.server.HTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
    """
    probe = {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1, "failureThreshold": 2}
    pod = python_pod("probed", server, restart="Always", container={
        "env": [{"name": "HEALTHY", "value": str(healthy)}],
        # Liveness starts counting once the startup probe passed: a server slow to bind its port on
        # a busy machine is not restarted for it.
        "startupProbe": {**probe, "failureThreshold": 60},
        "readinessProbe": probe, "livenessProbe": {**probe, "failureThreshold": 3},
    })
    core.create_namespaced_pod(ns, pod)

    def ready() -> bool:
        found = read_pod(core, ns, "probed")
        return bool(found and found.status.container_statuses and found.status.container_statuses[0].ready)

    eventually(ready, timeout=60, what="readiness probe to pass")
    healthy.unlink()
    eventually(lambda: not ready(), timeout=30, what="readiness probe to fail")

    def restarted() -> bool:
        found = read_pod(core, ns, "probed")
        return bool(found and found.status.container_statuses[0].restart_count >= 1)

    eventually(restarted, timeout=60, what="liveness failure to restart the container")
    healthy.touch()
    eventually(ready, timeout=60, what="ready again after the restart")


HANDLER = """
    import os, pathlib, signal, sys, time
    marker = pathlib.Path("/data/marker")
    def on_term(signum, frame):
        time.sleep(float(os.environ["HANDLER_SECONDS"]))
        marker.write_text("terminated gracefully")
        sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)
    pathlib.Path("/data/started").write_text("yes")
    while True:
        time.sleep(0.1)
"""


def claim_with_volume(core: client.CoreV1Api, namespace: str, directory: Path) -> None:
    directory.mkdir(parents=True)
    volume_name = f"pv-{namespace}"
    core.create_persistent_volume({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": volume_name},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
                 "hostPath": {"path": str(directory)}, "persistentVolumeReclaimPolicy": "Retain",
                 "claimRef": {"namespace": namespace, "name": "data"}},
    })
    core.create_namespaced_persistent_volume_claim(namespace, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": volume_name,
                 "resources": {"requests": {"storage": "1Gi"}}},
    })


# The slow handler needs far longer than the grace, so only a SIGKILL at the deadline keeps it from
# writing its marker, however late the agent's sync loop runs.
@pytest.mark.parametrize(("grace", "handler_seconds", "graceful"), [(10, 1, True), (1, 30, False)])
def test_eviction_sends_sigterm_and_respects_the_grace_period(
    local_core: client.CoreV1Api, local_namespace: str, tmp_path: Path,
    grace: int, handler_seconds: int, graceful: bool,
) -> None:
    core, ns = local_core, local_namespace
    claim_with_volume(core, ns, tmp_path / "pvc")
    pod = python_pod("evictee", HANDLER, restart="Always", container={
        "env": [{"name": "HANDLER_SECONDS", "value": str(handler_seconds)}],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }, volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
        terminationGracePeriodSeconds=grace)
    core.create_namespaced_pod(ns, pod)
    eventually(lambda: (tmp_path / "pvc" / "started").exists(), timeout=60, what="the pod to start")

    eviction = client.V1Eviction(metadata=client.V1ObjectMeta(name="evictee", namespace=ns))
    core.create_namespaced_pod_eviction("evictee", ns, eviction)
    conditions = {c.type: c for c in (read_pod(core, ns, "evictee").status.conditions or [])}
    assert conditions["DisruptionTarget"].reason == "EvictionByEvictionAPI"

    started = time.monotonic()
    eventually(lambda: read_pod(core, ns, "evictee") is None, timeout=grace + 30, what="the pod to be gone")
    assert time.monotonic() - started < grace + 20
    marker = tmp_path / "pvc" / "marker"
    if graceful:
        assert marker.read_text() == "terminated gracefully"
    else:
        assert not marker.exists(), "the handler outlived the grace period: it should have been SIGKILLed"


def test_agent_restart_neither_orphans_nor_duplicates(
    local_cluster: LocalCluster, local_core: client.CoreV1Api, local_namespace: str, tmp_path: Path
) -> None:
    core, ns = local_core, local_namespace
    pidfile = tmp_path / "pids"
    script = f"""
        import os, time
        with open({str(pidfile)!r}, "a") as f:
            f.write(f"{{os.getpid()}}\\n")
        time.sleep(3600)
    """
    core.create_namespaced_pod(ns, python_pod("long", script, restart="Always"))
    eventually(phase_is(core, ns, "long", "Running"), timeout=60, what="Running")
    eventually(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=30, what="pid written")
    local_cluster.restart_agent("ondemand-1")
    restarted_at = datetime.now(UTC)  # the old agent is dead: only the new one renews now
    # The new agent renews its lease before it adopts the running containers and starts syncing.
    eventually(lambda: lease_renewed_after(local_core, "ondemand-1", restarted_at), timeout=60,
               what="the new agent running")
    time.sleep(3)  # several sync periods of the new agent
    pids = pidfile.read_text().split()
    assert len(pids) == 1, f"the container was started again: {pids}"
    os.kill(int(pids[0]), 0)  # still alive
    pod = read_pod(core, ns, "long")
    assert pod is not None and pod.status.container_statuses[0].restart_count == 0

    # The adopted container is still managed: deleting the pod stops it.
    core.delete_namespaced_pod("long", ns, grace_period_seconds=2)
    eventually(lambda: read_pod(core, ns, "long") is None, timeout=30, what="pod deletion")
    with pytest.raises(ProcessLookupError):
        os.kill(int(pids[0]), 0)


def test_preempt_drill_disrupts_every_pod_on_the_spot_node(
    local_cluster: LocalCluster, local_core: client.CoreV1Api, local_namespace: str
) -> None:
    core, ns = local_core, local_namespace
    names = ["spot-a", "spot-b"]
    for name in names:
        core.create_namespaced_pod(ns, python_pod(name, "import time; time.sleep(3600)", restart="Always",
                                                  nodeSelector={CAPACITY_TYPE_LABEL: "spot"},
                                                  tolerations=[SPOT_TOLERATION]))
    for name in names:
        eventually(phase_is(core, ns, name, "Running"), timeout=60, what=f"{name} Running")
    cluster_id = local_cluster.plane.cluster_id
    assert processes_with_marker(cluster_id, {"GANFORGE_NODE": "spot-1"})

    seen: dict[str, set[str]] = {name: set() for name in names}
    stop = threading.Event()

    # Listed here, before the reclaim starts, so the watch cannot begin after the evictions.
    version = core.list_namespaced_pod(ns).metadata.resource_version

    def record_conditions() -> None:
        # A watch sees every intermediate state; polling can miss a pod that is gone in a blink.
        nonlocal version
        while not stop.is_set():
            for event in watch.Watch().stream(core.list_namespaced_pod, ns, resource_version=version,
                                              timeout_seconds=1):
                pod = event["object"]
                version = pod.metadata.resource_version
                seen[pod.metadata.name] |= {c.type for c in pod.status.conditions or [] if c.status == "True"}

    watcher = threading.Thread(target=record_conditions, daemon=True)
    watcher.start()
    try:
        local_cluster.reclaim_node("spot-1", grace_seconds=3)
    finally:
        stop.set()
        watcher.join()
    assert all("DisruptionTarget" in seen[name] for name in names), seen
    assert not processes_with_marker(cluster_id, {"GANFORGE_NODE": "spot-1", "HOSTNAME": names[0]})
    # The pods go with the machine: by the agent's final delete when they stopped within the drain
    # window, otherwise (a loaded machine) once the replacement agent or pod GC finds them orphaned.
    eventually(lambda: all(read_pod(core, ns, name) is None for name in names), timeout=90,
               what="evicted pods gone")
    # The replacement node joins again, spot-labelled and Ready.
    eventually(lambda: any(c.type == "Ready" and c.status == "True"
                           for c in (read_pod_node(core, "spot-1") or [])), timeout=60, what="spot-1 back")


def lease_renewed_after(core: client.CoreV1Api, node: str, moment: datetime) -> bool:
    lease = client.CoordinationV1Api(core.api_client).read_namespaced_lease(node, "kube-node-lease")
    return bool(lease.spec.renew_time and lease.spec.renew_time > moment)


def read_pod_node(core: client.CoreV1Api, name: str) -> list[Any] | None:
    try:
        return list(core.read_node(name).status.conditions or [])
    except ApiException:
        return None


def test_teardown_leaves_no_process_namespace_or_mount(tmp_path: Path) -> None:
    workdir = tmp_path / "cluster"
    cluster = LocalCluster(workdir, nodes=(NodeSpec("solo"),), with_services=False)
    cluster.start()
    try:
        core = client.CoreV1Api(kube_client(cluster))
        eventually(lambda: core.list_namespaced_service_account("default").items, timeout=60, what="default SA")
        core.create_namespaced_pod("default", python_pod("sleeper", "import time; time.sleep(3600)", "Always"))
        running = eventually(phase_is(core, "default", "sleeper", "Running"), timeout=60, what="Running")
        uid = running.metadata.uid
        assert netns_name(uid) in list_netns() and host_veth_name(uid) in list_host_veths()
    finally:
        cluster.stop()
    assert not processes_with_marker(cluster.plane.cluster_id)
    assert netns_name(uid) not in list_netns()
    assert host_veth_name(uid) not in list_host_veths()
    assert not list((workdir / "nodes" / "solo" / "pods").glob("*"))
    assert str(workdir) not in Path("/proc/self/mountinfo").read_text()


def kube_client(cluster: LocalCluster) -> ApiClient:
    from kubernetes import config

    return config.new_client_from_config(config_file=str(cluster.kubeconfig))


def test_pod_sees_its_own_hostname_and_fqdn(local_core: client.CoreV1Api, local_namespace: str,
                                           tmp_path: Path) -> None:
    """gloo and NCCL advertise the address `gethostname()` resolves to, so it must be the pod's."""
    core, ns = local_core, local_namespace
    host_name = socket.gethostname()
    core.create_namespaced_service(ns, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "rdzv"},
        "spec": {"clusterIP": "None", "selector": {"app": "rdzv"}, "publishNotReadyAddresses": True,
                 "ports": [{"name": "c10d", "port": 29500}]},
    })
    script = """
        import json, os, pathlib, socket, time
        name = socket.gethostname()
        seen = {"hostname": name, "env": os.environ["HOSTNAME"], "etc": pathlib.Path("/etc/hostname").read_text(),
                "own_ip": socket.gethostbyname(name), "fqdn": socket.getfqdn()}
        if os.environ.get("SUBDOMAIN_NAME"):
            deadline, seen["subdomain_ip"] = time.monotonic() + 45, None
            while seen["subdomain_ip"] is None and time.monotonic() < deadline:
                try:
                    seen["subdomain_ip"] = socket.gethostbyname(os.environ["SUBDOMAIN_NAME"])
                except OSError:
                    time.sleep(0.5)
        pathlib.Path(os.environ["OUT"]).write_text(json.dumps(seen))
    """
    # A failure's traceback lands in the pod status.
    tell = {"terminationMessagePolicy": "FallbackToLogsOnError"}
    worker = python_pod("rank-0-pod", script, container={**tell, "env": [
        {"name": "OUT", "value": str(tmp_path / "worker.json")},
        {"name": "SUBDOMAIN_NAME", "value": "worker-0.rdzv"},
    ]}, hostname="worker-0", subdomain="rdzv")
    worker["metadata"]["labels"] = {"app": "rdzv"}
    # Pod names may be longer than a hostname: kubelet cuts them to 63 characters, then trailing '-'/'.'.
    long_name = "h" * 62 + ".tail"
    unnamed = python_pod(long_name, script, container={**tell, "env": [
        {"name": "OUT", "value": str(tmp_path / "long.json")}]})
    core.create_namespaced_pod(ns, worker)
    core.create_namespaced_pod(ns, unnamed)

    for name, out in (("rank-0-pod", "worker.json"), (long_name, "long.json")):
        done = eventually(phase_is(core, ns, name, "Succeeded", "Failed"), timeout=90, what=f"{name} to finish")
        assert done.status.phase == "Succeeded", str(done.status.container_statuses[0].state.terminated)
        seen = json.loads((tmp_path / out).read_text())
        pod_ip = done.status.pod_ip
        if name == "rank-0-pod":
            assert (seen["hostname"], seen["env"], seen["etc"]) == ("worker-0", "worker-0", "worker-0\n")
            assert seen["fqdn"] == f"worker-0.rdzv.{ns}.svc.cluster.local"
            assert seen["own_ip"] == pod_ip
            assert seen["subdomain_ip"] == pod_ip, "CoreDNS did not answer <hostname>.<subdomain>"
        else:
            assert seen["hostname"] == seen["env"] == seen["fqdn"] == "h" * 62
            assert seen["own_ip"] == pod_ip
    assert socket.gethostname() == host_name, "a pod renamed the host"


def test_termination_message_file_and_fallback_to_logs(local_core: client.CoreV1Api, local_namespace: str) -> None:
    core, ns = local_core, local_namespace
    noisy_failure = "import sys\nfor i in range(100):\n    print(f'line {i}')\nsys.exit(3)\n"
    writer = """
        import pathlib
        print("this goes to the log only")
        pathlib.Path("/dev/termination-log").write_text("checkpoint kimg=12.5 written")
    """
    pod = python_pod("messages", writer)
    main = pod["spec"]["containers"][0]
    pod["spec"]["containers"] = [
        main,
        {**main, "name": "fallback", "command": ["python", "-c", noisy_failure],
         "terminationMessagePolicy": "FallbackToLogsOnError"},
        {**main, "name": "file-only", "command": ["python", "-c", noisy_failure]},
    ]
    core.create_namespaced_pod(ns, pod)
    done = eventually(phase_is(core, ns, "messages", "Failed"), timeout=60, what="pod Failed")
    terminated = {status.name: status.state.terminated for status in done.status.container_statuses}
    assert terminated["main"].exit_code == 0
    assert terminated["main"].message == "checkpoint kimg=12.5 written"
    assert terminated["fallback"].exit_code == 3
    assert terminated["fallback"].message == "".join(f"line {i}\n" for i in range(20, 100))
    # The default policy, File, never reads the log: an empty file means no message.
    assert terminated["file-only"].exit_code == 3
    assert terminated["file-only"].message is None


SECURITY_PROBE = """
    import os, pathlib
    said = [f"ids {os.getuid()} {os.getgid()}"]
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    said.append(f"caps {status['CapEff'].strip()} {status['CapBnd'].strip()} nnp {status['NoNewPrivs'].strip()}")
    for path in ("/data/written", "/var/tmp/ganforge-probe", "/etc/ganforge-probe"):
        try:
            pathlib.Path(path).write_text("x")
            said.append(f"wrote {path}")
        except OSError as error:
            said.append(f"refused {path} {error.strerror}")
    try:
        os.setuid(0)
        said.append("setuid 0 allowed")
    except OSError as error:  # EINVAL: no uid 0 exists in its user namespace
        said.append(f"setuid 0 refused {error.strerror}")
    # The node runtime serves no container logs; the termination message carries the report.
    pathlib.Path("/dev/termination-log").write_text("\\n".join(said))
"""


def test_the_runtime_enforces_the_restricted_security_context(local_core: client.CoreV1Api,
                                                               local_namespace: str) -> None:
    core, ns = local_core, local_namespace
    restricted = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                  "readOnlyRootFilesystem": True}
    pod = python_pod("confined", SECURITY_PROBE,
                     securityContext={"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532},
                     volumes=[{"name": "data", "emptyDir": {}}],
                     container={"securityContext": restricted, "terminationMessagePolicy": "FallbackToLogsOnError",
                                "volumeMounts": [{"name": "data", "mountPath": "/data"}]})
    core.create_namespaced_pod(ns, pod)
    done = eventually(phase_is(core, ns, "confined", "Succeeded", "Failed"), timeout=60, what="the probe to end")
    assert done.status.phase == "Succeeded", str(done.status.container_statuses[0].state.terminated)
    said = done.status.container_statuses[0].state.terminated.message.splitlines()
    assert said[:2] == ["ids 65532 65532", "caps 0000000000000000 0000000000000000 nnp 1"], said
    assert "wrote /data/written" in said  # its volume is writable
    assert "refused /var/tmp/ganforge-probe Read-only file system" in said
    assert "refused /etc/ganforge-probe Read-only file system" in said
    assert said[-1] == "setuid 0 refused Invalid argument"
    assert not Path("/var/tmp/ganforge-probe").exists()

    # runAsNonRoot without a user: the images here run as root, so kubelet's check refuses it.
    unnamed = python_pod("no-user", "print('ran')", securityContext={"runAsNonRoot": True})
    core.create_namespaced_pod(ns, unnamed)

    def waiting_reason() -> client.V1ContainerStateWaiting | None:
        found = read_pod(core, ns, "no-user")
        statuses = (found.status.container_statuses or []) if found else []
        waiting = statuses[0].state.waiting if statuses else None
        return waiting if waiting is not None and waiting.reason == "CreateContainerConfigError" else None

    waiting = eventually(waiting_reason, timeout=60, what="CreateContainerConfigError")
    assert "runAsNonRoot and image will run as root" in waiting.message
    assert read_pod(core, ns, "no-user").status.phase == "Pending"


def test_a_container_over_its_memory_limit_is_oom_killed(local_core: client.CoreV1Api, local_namespace: str) -> None:
    """The runtime runs each container in a memory cgroup limited to resources.limits.memory; the
    kernel's kill is reported as kubelet reports it: OOMKilled, exit code 137."""
    core, ns = local_core, local_namespace
    grows = "chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 2**20))"
    core.create_namespaced_pod(ns, python_pod("grows", grows, container={
        "resources": {"requests": {"memory": "64Mi"}, "limits": {"memory": "64Mi"}}}))
    core.create_namespaced_pod(ns, python_pod("fits", "x = bytearray(32 * 2**20)", container={
        "resources": {"limits": {"memory": "256Mi"}}}))
    pod = eventually(phase_is(core, ns, "grows", "Failed"), timeout=60, what="the growing pod to fail")
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.reason, terminated.exit_code) == ("OOMKilled", 137)
    pod = eventually(phase_is(core, ns, "fits", "Succeeded"), timeout=60, what="the pod within its limit to succeed")
    assert pod.status.container_statuses[0].state.terminated.reason == "Completed"
