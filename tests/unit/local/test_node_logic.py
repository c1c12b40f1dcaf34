"""Pure logic of the node runtime: status, environment, probes, images, addresses."""

from __future__ import annotations

from pathlib import Path

import pytest

from ganforge.local.node import images
from ganforge.local.node.environment import ContainerConfigError, container_argv, container_environment, field_ref
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
