"""Pure logic of the node runtime: status, environment, hostnames, termination messages, probes, images,
addresses."""

from __future__ import annotations

from pathlib import Path

import pytest

from ganforge.local.node import images, termination
from ganforge.local.node.environment import (
    ContainerConfigError,
    container_argv,
    container_environment,
    field_ref,
    hosts_file,
    pod_host_domain,
    pod_hostname,
)
from ganforge.local.node.network import AddressAllocator, node_subnet
from ganforge.local.node.pod_status import ContainerView, container_status, pod_conditions, pod_phase
from ganforge.local.node.probes import ProbeState

POD = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"app": "web"}},
    "spec": {"nodeName": "n1", "serviceAccountName": "sa", "containers": []},
    "status": {"podIP": "10.244.1.2", "hostIP": "192.0.2.10"},
}


def test_field_refs_resolve_like_the_downward_api() -> None:
    assert field_ref(POD, "metadata.labels['app']") == "web"
    assert field_ref(POD, "status.podIP") == "10.244.1.2"
    assert field_ref(POD, "spec.serviceAccountName") == "sa"
    with pytest.raises(ContainerConfigError, match="unsupported fieldPath"):
        field_ref(POD, "spec.nope")


def test_environment_expands_references_and_reads_objects() -> None:
    container = {
        "name": "c",
        "resources": {"limits": {"memory": "1Gi", "cpu": "500m"}},
        "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
        "env": [
            {"name": "A", "value": "x"},
            {"name": "B", "value": "$(A)-$(MISSING)-$$(A)"},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        ],
    }
    objects = {("ConfigMap", "ns", "cm"): {"one": "1"}, ("Secret", "ns", "s"): {"k": "secret"}}
    env = container_environment(POD, container, lambda kind, ns, name: objects.get((kind, ns, name)), {})
    assert env["B"] == "x-$(MISSING)-$(A)"
    assert (env["CM_one"], env["MEM"], env["CPU"], env["S"]) == ("1", "1024", "1", "secret")
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"
    assert container_argv({"name": "c", "args": ["$(A)"]}, ("echo",), env) == ["echo", "x"]


def test_missing_secret_key_is_a_config_error_unless_optional() -> None:
    ref = {"name": "S", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}
    with pytest.raises(ContainerConfigError, match="secret 'absent'"):
        container_environment(POD, {"name": "c", "env": [ref]}, lambda *_: None, {})
    ref["valueFrom"]["secretKeyRef"]["optional"] = True  # type: ignore[index]
    assert "S" not in container_environment(POD, {"name": "c", "env": [ref]}, lambda *_: None, {})


def test_no_command_and_no_entrypoint_is_an_error() -> None:
    with pytest.raises(ContainerConfigError, match="no command"):
        container_argv({"name": "c"}, (), {})


def test_hostname_is_spec_hostname_or_name_truncated_like_kubelet() -> None:
    assert pod_hostname(POD) == "p"
    with_hostname = {**POD, "spec": {**POD["spec"], "hostname": "worker-0"}}
    assert pod_hostname(with_hostname) == "worker-0"
    # 63 characters at most, and the cut never leaves a trailing '-' or '.'.
    long_name = {**POD, "metadata": {**POD["metadata"], "name": "a" * 61 + "-.b" + "c" * 10}}
    assert pod_hostname(long_name) == "a" * 61
    assert pod_hostname({**POD, "metadata": {**POD["metadata"], "name": "x" * 70}}) == "x" * 63
    assert container_environment(long_name, {"name": "c"}, lambda *_: None, {})["HOSTNAME"] == "a" * 61


def test_hosts_file_puts_the_fqdn_first_when_a_subdomain_is_set() -> None:
    assert pod_host_domain(POD, "cluster.local") is None
    sub = {**POD, "spec": {**POD["spec"], "hostname": "w-0", "subdomain": "rdzv"}}
    domain = pod_host_domain(sub, "cluster.local")
    assert domain == "rdzv.ns.svc.cluster.local"
    lines = hosts_file("10.244.1.2", "w-0", domain).splitlines()
    assert lines[-1] == "10.244.1.2	w-0.rdzv.ns.svc.cluster.local	w-0"
    assert "127.0.0.1	localhost" in lines
    assert hosts_file("10.244.1.2", "p", None).splitlines()[-1] == "10.244.1.2	p"


def test_log_tail_keeps_the_last_80_lines_then_the_last_2048_bytes() -> None:
    short = b"".join(b"line %d\n" % i for i in range(100))
    assert termination.log_tail(short) == b"".join(b"line %d\n" % i for i in range(20, 100))
    assert termination.log_tail(b"one\ntwo\nunterminated", lines=2) == b"two\nunterminated"
    wide = b"".join(bytes([65 + i % 26]) * 99 + b"\n" for i in range(50))  # 5000 bytes in 50 lines
    tail = termination.log_tail(wide)
    assert len(tail) == 2048 and wide.endswith(tail)
    assert termination.log_tail(b"") == b""


def test_message_prefers_the_file_and_falls_back_to_logs_only_on_error() -> None:
    fallback = termination.POLICY_FALLBACK_TO_LOGS
    assert termination.choose_message(b"written", fallback, 3, b"logged\n") == "written"
    assert termination.choose_message(b"", fallback, 3, b"logged\n") == "logged\n"
    assert termination.choose_message(b"", fallback, 0, b"logged\n") == ""
    assert termination.choose_message(b"", termination.POLICY_FILE, 3, b"logged\n") == ""
    big = b"x" * 5000 + b"END"
    message = termination.choose_message(big, termination.POLICY_FILE, 0, b"")
    assert len(message) == termination.MAX_MESSAGE_BYTES and message.endswith("END")
    assert termination.choose_message(b"\xff ok", termination.POLICY_FILE, 0, b"") == "\ufffd ok"


def test_read_tail_returns_the_last_bytes_and_nothing_for_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(bytes(range(256)) * 40)
    assert termination.read_tail(path, 10) == bytes(range(246, 256))
    assert termination.read_tail(path, 1 << 20) == path.read_bytes()
    assert termination.read_tail(tmp_path / "absent", 10) == b""


def test_termination_message_reads_only_the_tails_of_its_files(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    log_file, message_file = tmp_path / "0.log", tmp_path / "termination-log"
    log_file.write_bytes(b"".join(b"%05d\n" % i for i in range(100_000)))
    message_file.write_bytes(b"")
    expected = b"".join(b"%05d\n" % i for i in range(99_920, 100_000)).decode()
    policy = termination.POLICY_FALLBACK_TO_LOGS
    # Every read goes through read_tail with the kubelet's byte limits, never the whole 600 kB log.
    reads: list[tuple[str, int]] = []
    real_read_tail = termination.read_tail

    def recording_read_tail(path: Path, limit: int) -> bytes:
        reads.append((path.name, limit))
        return real_read_tail(path, limit)

    monkeypatch.setattr(termination, "read_tail", recording_read_tail)
    assert termination.termination_message(message_file, policy, 1, log_file) == expected
    assert termination.termination_message(tmp_path / "absent", policy, 1, log_file) == expected
    message_file.write_text("done: 42 images")
    assert termination.termination_message(message_file, policy, 1, log_file) == "done: 42 images"
    assert termination.termination_message(None, termination.POLICY_FILE, 1, log_file) == ""
    assert set(reads) == {("termination-log", termination.MAX_MESSAGE_BYTES), ("absent", termination.MAX_MESSAGE_BYTES),
                          ("0.log", termination.MAX_LOG_BYTES)}


def view(**overrides: object) -> ContainerView:
    values: dict[str, object] = {"name": "c", "image": "python:3.11", "attempts": 1}
    values.update(overrides)
    return ContainerView(**values)  # type: ignore[arg-type]


def test_phase_follows_restart_policy() -> None:
    failed = {"exitCode": 3, "finishedAt": "t"}
    assert pod_phase([view(attempts=0)], pod_failed=False) == "Pending"
    assert pod_phase([view(running_since="t")], pod_failed=False) == "Running"
    assert pod_phase([view(current_exit=failed)], pod_failed=False) == "Failed"
    assert pod_phase([view(current_exit={"exitCode": 0})], pod_failed=False) == "Succeeded"
    assert pod_phase([view(current_exit=failed, will_restart=True)], pod_failed=False) == "Running"
    assert pod_phase([view(running_since="t")], pod_failed=True) == "Failed"


def test_container_status_shows_back_off_and_last_termination() -> None:
    status = container_status(view(attempts=3, current_exit={"exitCode": 3, "finishedAt": "t2"}, will_restart=True,
                                   current_started="t1"))
    assert status["restartCount"] == 2
    assert status["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert status["lastState"]["terminated"]["exitCode"] == 3
    killed = container_status(view(current_exit={"exitCode": 137, "signal": 9, "finishedAt": "t"}))
    assert killed["state"]["terminated"]["signal"] == 9


def test_terminated_state_carries_the_termination_message() -> None:
    record = {"exitCode": 3, "finishedAt": "t2", "message": "last words\n"}
    status = container_status(view(current_exit=record, current_started="t1"))
    assert status["state"]["terminated"]["message"] == "last words\n"
    restarting = container_status(view(attempts=2, current_exit=record, will_restart=True, current_started="t1"))
    assert restarting["lastState"]["terminated"]["message"] == "last words\n"
    assert "message" not in container_status(view(current_exit={"exitCode": 0, "message": ""}))["state"]["terminated"]


def test_condition_transition_time_moves_only_on_flips() -> None:
    first = pod_conditions([view(running_since="t", ready=True)], True, "Running", "t1", [])
    again = pod_conditions([view(running_since="t", ready=True)], True, "Running", "t2", first)
    assert {c["type"]: c["lastTransitionTime"] for c in again}["Ready"] == "t1"
    flipped = pod_conditions([view(running_since="t", ready=False)], True, "Running", "t3", again)
    ready = next(c for c in flipped if c["type"] == "Ready")
    assert (ready["status"], ready["lastTransitionTime"], ready["reason"]) == ("False", "t3", "ContainersNotReady")


def test_probe_thresholds() -> None:
    probe = ProbeState({"failureThreshold": 2, "successThreshold": 2, "periodSeconds": 5,
                        "initialDelaySeconds": 3}, started_at=0.0)
    assert not probe.due(2.0) and probe.due(3.0)
    probe.record(True, 3.0)
    assert not probe.healthy
    probe.record(True, 8.0)
    assert probe.healthy and not probe.due(10.0)
    probe.record(False, 13.0)
    assert probe.healthy and not probe.failed
    probe.record(False, 18.0)
    assert not probe.healthy and probe.failed


def test_unknown_image_names_the_table() -> None:
    with pytest.raises(images.UnknownImageError, match="not in the local image table"):
        images.resolve("nginx:latest")
    assert images.resolve("ghcr.io/ganforge/trainer:0.1").entrypoint == ("ganforge", "train")


def test_addresses_are_leased_by_pod_and_survive_a_restart(tmp_path: Path) -> None:
    allocator = AddressAllocator(node_subnet(3), tmp_path)
    first = allocator.allocate("pod-a")
    assert first == "10.244.3.2"
    assert AddressAllocator(node_subnet(3), tmp_path).allocate("pod-a") == first
    second = allocator.allocate("pod-b")
    allocator.release("pod-a")
    assert allocator.allocate("pod-c") == first and second == "10.244.3.3"
