"""Drives one Pod on this node toward its spec: sandbox, containers, restarts, probes, deletion.

`PodWorker.sync()` is called on every agent tick and on every change to the Pod. It only looks
at the Pod and at the attempt directories on disk, so a restarted agent continues where the last
one stopped, without starting a second copy of any container.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ganforge.local.network import CLUSTER_DNS_IP, CLUSTER_DOMAIN
from ganforge.local.node import images, security, termination
from ganforge.local.node.containers import Attempt, attempts
from ganforge.local.node.environment import (
    ContainerConfigError,
    Pod,
    container_argv,
    container_environment,
    hosts_file,
    pod_host_domain,
    pod_hostname,
)
from ganforge.local.node.memory import memory_limit
from ganforge.local.node.network import AddressAllocator, PodNetwork, setup_pod_network, teardown_pod_network
from ganforge.local.node.pod_status import (
    TERMINAL_PHASES,
    ContainerView,
    container_status,
    pod_conditions,
    pod_phase,
    will_restart,
)
from ganforge.local.node.probes import ProbeState, run_probe
from ganforge.local.node.shim import ContainerSpec, MountSpec, now_rfc3339
from ganforge.local.node.volumes import PodVolumes, VolumeNotReady, VolumeSourceReader

log = logging.getLogger(__name__)

# Each pod gets its own /dev/shm, as a pod sandbox does: a directory on the host's tmpfs, bind-mounted
# over /dev/shm in every container of the pod and removed with the sandbox, so shared memory that a
# killed process leaves behind (Triton's python backend keeps its regions there) goes with the pod.
HOST_SHM = Path("/dev/shm")


def pod_shm_dir(uid: str) -> Path:
    return HOST_SHM / f"ganforge-pod-{uid}"


# kubelet backs off 10s doubling to 5 minutes; a local cluster keeps the same shape, shorter.
RESTART_BACKOFF_START = 1.0
RESTART_BACKOFF_MAX = 30.0


class NodeServices(VolumeSourceReader, Protocol):
    """What a pod worker needs from its node agent (API access and node facts)."""

    node_name: str
    host_ip: str
    base_env: Mapping[str, str]

    def patch_pod_status(self, pod: Pod, status: Mapping[str, Any]) -> None: ...
    def delete_pod_finally(self, pod: Pod) -> None: ...


@dataclass
class ContainerRuntimeState:
    next_start_at: float = 0.0
    stopping_since: float | None = None  # deletion seen; the preStop hook runs from here
    terminate_sent_at: float | None = None
    probes: dict[str, ProbeState] = field(default_factory=dict)
    probes_for_attempt: int = -1


class PodWorker:
    def __init__(self, pod: Pod, state_dir: Path, allocator: AddressAllocator, services: NodeServices) -> None:
        self.pod = pod
        self.uid: str = pod["metadata"]["uid"]
        self.dir = state_dir
        self.allocator = allocator
        self.services = services
        self.network: PodNetwork | None = None
        self.name_resolution_mounts: list[MountSpec] = []  # written with the network: same for every container
        self.volumes: PodVolumes | None = None
        self.failure: tuple[str, str] | None = None
        self.pending_reason: tuple[str, str] | None = None
        self.runtime: dict[str, ContainerRuntimeState] = {}
        self.last_status: dict[str, Any] | None = None
        self.last_comparable: dict[str, Any] | None = None
        self.finished = False
        self.sandbox_removed = False
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "pod.json").write_text(json.dumps({"metadata": pod["metadata"]}))

    # -- naming ---------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return f"{self.pod['metadata']['namespace']}/{self.pod['metadata']['name']}"

    def containers(self) -> list[Mapping[str, Any]]:
        return list(self.pod["spec"]["containers"])

    def init_containers(self) -> list[Mapping[str, Any]]:
        return list(self.pod["spec"].get("initContainers") or [])

    def all_containers(self) -> list[Mapping[str, Any]]:
        """Init and app containers; their names are unique within a pod, so they share one directory."""
        return self.init_containers() + self.containers()

    def container_dir(self, name: str) -> Path:
        return self.dir / "containers" / name

    def log_path(self, name: str, attempt: int) -> Path:
        return self.dir / "logs" / name / f"{attempt}.log"

    def container_id(self, name: str, attempt: int) -> str:
        return f"ganforge://{self.uid}/{name}/{attempt}"

    # -- the loop -------------------------------------------------------------------------------

    def update(self, pod: Pod) -> None:
        self.pod = pod

    def sync(self) -> None:
        if self.finished:
            return
        if self.pod["metadata"].get("deletionTimestamp"):
            self._sync_deletion()
            return
        phase = (self.last_status or {}).get("phase") or self.pod.get("status", {}).get("phase")
        if phase in TERMINAL_PHASES:
            # Terminal pods keep their status; their processes and sandbox are already gone.
            self._teardown_sandbox()
            return
        if self.failure is None:
            self._sync_running()
        self._push_status()

    def _sync_running(self) -> None:
        try:
            self._ensure_sandbox()
        except VolumeNotReady as error:
            self.pending_reason = ("ContainerCreating", str(error))
            return
        self.pending_reason = None
        if self.volumes is not None:
            self.volumes.refresh()
        # Init containers run one at a time, in order, each to success, before any app container.
        for container in self.init_containers():
            if not self._init_succeeded(container):
                if self.failure is None:
                    self.pending_reason = ("PodInitializing", f"waiting for init container {container['name']!r}")
                return
        for container in self.containers():
            self._sync_container(container)
            if self.failure is not None:
                return

    def _ensure_sandbox(self) -> None:
        if self.network is None:
            address = self.allocator.allocate(self.uid)
            self.network = setup_pod_network(self.uid, address)
            self.name_resolution_mounts = self._write_name_resolution_files()
        if self.volumes is None:
            volumes = PodVolumes(self.pod, self.dir / "volumes", self.services)
            volumes.prepare()
            self.volumes = volumes

    def _sync_container(self, container: Mapping[str, Any]) -> None:
        name = container["name"]
        state = self.runtime.setdefault(name, ContainerRuntimeState())
        history = attempts(self.container_dir(name))
        now = time.monotonic()
        if not history:
            self._start(container, 0)
            return
        current = history[-1]
        record = current.finished()
        if record is None:
            self._probe(container, current, state, now)
            self._enforce_kill_deadline(current, state, now, self._grace_seconds())
            return
        policy = self.pod["spec"].get("restartPolicy", "Always")
        if will_restart(policy, int(record["exitCode"])):
            self._restart_after_backoff(container, state, len(history), now)

    def _init_succeeded(self, container: Mapping[str, Any]) -> bool:
        """Drive one init container; True once a run of it has exited 0."""
        name = container["name"]
        history = attempts(self.container_dir(name))
        if not history:
            self._start(container, 0)
            return False
        record = history[-1].finished()
        if record is None:
            return False
        code = int(record["exitCode"])
        if code == 0:
            return True
        if self.pod["spec"].get("restartPolicy", "Always") == "Never":
            detail = str(record.get("message") or "").strip()
            self.failure = ("Init:Error", f"init container {name!r} exited with {code}" + (f": {detail}" if detail
                                                                                           else ""))
            return False
        # Always and OnFailure pods retry a failed init container, with the usual back-off.
        state = self.runtime.setdefault(name, ContainerRuntimeState())
        self._restart_after_backoff(container, state, len(history), time.monotonic())
        return False

    def _restart_after_backoff(self, container: Mapping[str, Any], state: ContainerRuntimeState, runs: int,
                               now: float) -> None:
        if state.next_start_at == 0.0:
            delay = min(RESTART_BACKOFF_START * 2 ** (runs - 1), RESTART_BACKOFF_MAX)
            state.next_start_at = now + delay
        if now >= state.next_start_at:
            state.next_start_at = 0.0
            state.terminate_sent_at = None
            self._start(container, runs)

    def _start(self, container: Mapping[str, Any], number: int) -> None:
        name = container["name"]
        assert self.network is not None and self.volumes is not None
        try:
            image = images.resolve(container.get("image", ""))
        except images.UnknownImageError as error:
            self.failure = ("ImageNotInLocalTable", f"container {name!r}: {error}")
            log.warning("pod %s failed: %s", self.name, error)
            return
        try:
            base = dict(self.services.base_env)
            base["PATH"] = f"{image.bin_dir}:{base.get('PATH', '/usr/local/bin:/usr/bin:/bin')}"
            pod_view = {**self.pod, "status": {**self.pod.get("status", {}), "podIP": self.network.ip,
                                               "hostIP": self.services.host_ip}}
            env = container_environment(pod_view, container, self.services.object_data, base)
            argv = container_argv(container, image.entrypoint, env)
            mounts = self.volumes.mounts_for(container) + self.name_resolution_mounts
            process_security = security.resolve(self.pod["spec"], container)
        except (ContainerConfigError, VolumeNotReady, security.SecurityContextError) as error:
            self.pending_reason = ("CreateContainerConfigError", str(error))
            return
        attempt = Attempt(self.container_dir(name) / str(number))
        log_path = self.log_path(name, number)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        message_file = attempt.create_termination_log()
        message_path = container.get("terminationMessagePath") or termination.DEFAULT_PATH
        mounts.append(MountSpec(str(message_file), message_path, is_file=True))
        spec = ContainerSpec(
            argv, env, str(log_path), container.get("workingDir"), mounts,
            hostname=pod_hostname(self.pod),
            termination_message_file=str(message_file),
            termination_message_policy=container.get("terminationMessagePolicy") or termination.POLICY_FILE,
            security=process_security.to_json(),
            memory_limit_bytes=memory_limit(container),
        )
        attempt.launch(spec, self.network.netns, dict(self.services.base_env))
        log.info("pod %s: started container %s (attempt %d)", self.name, name, number)

    def _write_name_resolution_files(self) -> list[MountSpec]:
        """/etc/hostname, /etc/hosts and /etc/resolv.conf of the pod, as kubelet and the runtime write
        them, and the pod's own /dev/shm."""
        assert self.network is not None
        metadata = self.pod["metadata"]
        hostname = pod_hostname(self.pod)
        hosts = self.dir / "etc-hosts"
        hosts.write_text(hosts_file(self.network.ip, hostname, pod_host_domain(self.pod, CLUSTER_DOMAIN)))
        etc_hostname = self.dir / "etc-hostname"
        etc_hostname.write_text(f"{hostname}\n")
        shm = pod_shm_dir(self.uid)
        shm.mkdir(exist_ok=True)
        shm.chmod(0o1777)
        mounts = [MountSpec(str(hosts), "/etc/hosts", read_only=True, is_file=True),
                  MountSpec(str(etc_hostname), "/etc/hostname", read_only=True, is_file=True),
                  MountSpec(str(shm), str(HOST_SHM))]
        if self.pod["spec"].get("dnsPolicy", "ClusterFirst") in ("ClusterFirst", "ClusterFirstWithHostNet"):
            namespace = metadata["namespace"]
            search = f"{namespace}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}"
            resolv = self.dir / "resolv.conf"
            resolv.write_text(f"nameserver {CLUSTER_DNS_IP}\nsearch {search}\noptions ndots:5\n")
            mounts.append(MountSpec(str(resolv), "/etc/resolv.conf", read_only=True, is_file=True))
        return mounts

    # -- probes ---------------------------------------------------------------------------------

    def _probe(self, container: Mapping[str, Any], attempt: Attempt, state: ContainerRuntimeState, now: float) -> None:
        if attempt.started() is None or self.network is None:
            return
        if state.probes_for_attempt != attempt.number:
            state.probes = {
                kind: ProbeState(container[f"{kind}Probe"], started_at=now)
                for kind in ("startup", "liveness", "readiness")
                if container.get(f"{kind}Probe")
            }
            state.probes_for_attempt = attempt.number
        startup = state.probes.get("startup")
        for kind, probe in state.probes.items():
            if kind != "startup" and startup is not None and not startup.healthy:
                continue
            if kind == "startup" and probe.healthy:
                continue
            if probe.due(now):
                probe.record(run_probe(probe.probe, container, self.network.netns, self.network.ip), now)
                if kind in ("startup", "liveness") and probe.failed and state.terminate_sent_at is None:
                    log.info("pod %s: %s probe of %s failed, restarting it", self.name, kind, container["name"])
                    attempt.terminate()
                    state.terminate_sent_at = now

    def _enforce_kill_deadline(self, attempt: Attempt, state: ContainerRuntimeState, now: float, grace: float) -> None:
        if state.terminate_sent_at is not None and now - state.terminate_sent_at >= grace:
            attempt.kill()

    def _ready(self, name: str, attempt: Attempt | None) -> tuple[bool, bool]:
        """(started, ready) of the running attempt, from its probes."""
        if attempt is None or attempt.finished() is not None or attempt.started() is None:
            return False, False
        probes = self.runtime.get(name, ContainerRuntimeState())
        if probes.probes_for_attempt != attempt.number:
            startup_defined = False
            readiness_defined = False
        else:
            startup_defined = "startup" in probes.probes
            readiness_defined = "readiness" in probes.probes
        started = not startup_defined or probes.probes["startup"].healthy
        ready = started and (not readiness_defined or probes.probes["readiness"].healthy)
        return started, ready

    # -- deletion -------------------------------------------------------------------------------

    def _grace_seconds(self) -> float:
        metadata = self.pod["metadata"]
        if metadata.get("deletionTimestamp") and metadata.get("deletionGracePeriodSeconds") is not None:
            return float(metadata["deletionGracePeriodSeconds"])
        return float(self.pod["spec"].get("terminationGracePeriodSeconds", 30))

    def _sync_deletion(self) -> None:
        now = time.monotonic()
        grace = self._grace_seconds()
        all_stopped = True
        for container in self.all_containers():
            history = attempts(self.container_dir(container["name"]))
            if not history or history[-1].finished() is not None:
                continue
            all_stopped = False
            state = self.runtime.setdefault(container["name"], ContainerRuntimeState())
            state.stopping_since = state.stopping_since or now
            # A preStop sleep runs first (endpoints drop the pod meanwhile); it counts against the grace.
            pre_stop = min(_pre_stop_sleep_seconds(container), grace)
            if state.terminate_sent_at is None:
                if now - state.stopping_since < pre_stop:
                    continue
                log.info("pod %s: SIGTERM to %s (grace %.0fs)", self.name, container["name"], grace)
                history[-1].terminate()
                state.terminate_sent_at = now
            self._enforce_kill_deadline(history[-1], state, now, grace - pre_stop)
        if not all_stopped:
            self._push_status()
            return
        self._push_status()
        self._teardown_sandbox()
        self.services.delete_pod_finally(self.pod)
        self.forget()

    def kill_everything(self) -> None:
        """Stop every container at once (node reclaimed or pod gone from the API)."""
        for container in self.all_containers():
            for attempt in attempts(self.container_dir(container["name"])):
                attempt.kill()
        self._teardown_sandbox()

    def _teardown_sandbox(self) -> None:
        # Terminal pods are synced on every tick; their sandbox only needs removing once.
        if self.sandbox_removed:
            return
        for container in self.all_containers():
            history = attempts(self.container_dir(container["name"]))
            if history and history[-1].finished() is None:
                history[-1].kill()
        teardown_pod_network(self.uid)
        shutil.rmtree(pod_shm_dir(self.uid), ignore_errors=True)
        self.allocator.release(self.uid)
        self.sandbox_removed = True

    def forget(self) -> None:
        self.finished = True
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- status ---------------------------------------------------------------------------------

    def views(self, init: bool = False) -> list[ContainerView]:
        """App containers' views, or with `init` the init containers' (which restart only on failure,
        and never under restartPolicy Never)."""
        policy = self.pod["spec"].get("restartPolicy", "Always")
        if init:
            policy = "Never" if policy == "Never" else "OnFailure"
        views = []
        for container in self.init_containers() if init else self.containers():
            name = container["name"]
            history = attempts(self.container_dir(name))
            current = history[-1] if history else None
            previous = history[-2] if len(history) > 1 else None
            exit_record = current.finished() if current else None
            started_record = current.started() if current else None
            started, ready = self._ready(name, current)
            waiting = self.failure or self.pending_reason
            views.append(
                ContainerView(
                    name=name,
                    image=container.get("image", ""),
                    attempts=len(history),
                    running_since=started_record["startedAt"] if started_record and exit_record is None else None,
                    current_exit=exit_record,
                    current_started=started_record["startedAt"] if started_record else None,
                    previous_exit=previous.finished() if previous else None,
                    previous_started=(previous.started() or {}).get("startedAt") if previous else None,
                    will_restart=exit_record is not None
                    and will_restart(policy, int(exit_record["exitCode"]))
                    and not self.pod["metadata"].get("deletionTimestamp"),
                    waiting_reason=waiting[0] if waiting else None,
                    waiting_message=waiting[1] if waiting else "",
                    ready=ready if not init else exit_record is not None and int(exit_record["exitCode"]) == 0,
                    started=started,
                    container_id=self.container_id(name, current.number) if current else "",
                )
            )
        return views

    def _push_status(self) -> None:
        views = self.views()
        init_views = self.views(init=True)
        phase = pod_phase(views, self.failure is not None)
        initialized = all(view.ready for view in init_views)
        now = now_rfc3339()
        previous = self.pod.get("status", {})
        status: dict[str, Any] = {
            "phase": phase,
            "hostIP": self.services.host_ip,
            "hostIPs": [{"ip": self.services.host_ip}],
            "startTime": previous.get("startTime") or now,
            "conditions": pod_conditions(views, self.network is not None and not self.sandbox_removed, phase, now,
                                         previous.get("conditions", []), initialized),
            "containerStatuses": [container_status(view) for view in views],
        }
        if init_views:
            status["initContainerStatuses"] = [container_status(view) for view in init_views]
        if self.network is not None:
            status["podIP"] = self.network.ip
            status["podIPs"] = [{"ip": self.network.ip}]
        if self.failure is not None:
            status["reason"], status["message"] = self.failure
        comparable = {k: v for k, v in status.items() if k != "conditions"}
        comparable["conditions"] = [(c["type"], c["status"]) for c in status["conditions"]]
        if comparable == self.last_comparable:
            return
        self.services.patch_pod_status(self.pod, status)
        self.last_status = status
        self.last_comparable = comparable
        if phase in TERMINAL_PHASES:
            self._teardown_sandbox()


def _pre_stop_sleep_seconds(container: Mapping[str, Any]) -> float:
    """The container's `lifecycle.preStop.sleep` (the hook this runtime supports); 0 without one."""
    hook = (container.get("lifecycle") or {}).get("preStop") or {}
    if "sleep" in hook:
        return float(hook["sleep"].get("seconds", 0))
    if hook:
        log.warning("container %s: only preStop.sleep hooks are supported here; %s ignored",
                    container.get("name"), sorted(hook))
    return 0.0
