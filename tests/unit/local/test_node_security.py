"""The node runtime's reading of a securityContext: kubelet's refusals, the pod/container
precedence, and which mounts readOnlyRootFilesystem turns read-only."""

from __future__ import annotations

from typing import Any

import pytest

from ganforge.local.node.security import (
    CAPABILITIES,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RELATIME,
    SecurityContextError,
    read_only_remounts,
    resolve,
)


def pod(pod_context: dict[str, Any] | None = None, **container_context: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    container = {"name": "main", "securityContext": container_context}
    return {"securityContext": pod_context or {}, "containers": [container]}, container


def test_the_restricted_settings_the_operator_writes_become_process_settings() -> None:
    security = resolve(*pod({"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532},
                            allowPrivilegeEscalation=False, capabilities={"drop": ["ALL"]},
                            readOnlyRootFilesystem=True))
    assert (security.run_as_user, security.run_as_group) == (65532, 65532)
    assert security.no_new_privileges and security.read_only_root
    assert security.drop_capabilities == list(range(len(CAPABILITIES)))


def test_the_container_overrides_the_pod_and_nothing_set_means_nothing_enforced() -> None:
    security = resolve(*pod({"runAsUser": 1000, "runAsGroup": 1000}, runAsUser=2000))
    assert (security.run_as_user, security.run_as_group) == (2000, 1000)
    bare = resolve({"containers": []}, {"name": "main"})
    assert bare.run_as_user is None and not bare.no_new_privileges and not bare.read_only_root
    assert bare.drop_capabilities == []
    named = resolve(*pod(capabilities={"drop": ["NET_RAW", "CAP_SYS_ADMIN"]}))
    assert named.drop_capabilities == sorted([CAPABILITIES.index("NET_RAW"), CAPABILITIES.index("SYS_ADMIN")])


@pytest.mark.parametrize("pod_context, container_context, message", [
    ({"runAsNonRoot": True}, {}, "container has runAsNonRoot and image will run as root"),
    ({"runAsNonRoot": True, "runAsUser": 1000}, {"runAsUser": 0}, "runAsUser breaks non-root policy"),
    ({}, {"runAsNonRoot": True, "runAsUser": 0}, "runAsUser breaks non-root policy"),
    ({}, {"capabilities": {"drop": ["NET_RAWW"]}}, "unknown capabilities ['NET_RAWW']"),
])
def test_kubelets_refusals(pod_context: dict[str, Any], container_context: dict[str, Any], message: str) -> None:
    with pytest.raises(SecurityContextError, match=message.replace("[", r"\[").replace("]", r"\]")):
        resolve(*pod(pod_context, **container_context))


MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
23 22 0:5 / /proc rw,nosuid,nodev,noexec,relatime shared:2 - proc proc rw
24 22 0:6 / /dev rw,nosuid shared:3 - devtmpfs udev rw
25 24 0:7 / /dev/shm rw,nosuid,nodev shared:4 - tmpfs tmpfs rw
26 22 0:8 / /tmp rw,nosuid,nodev shared:5 - tmpfs tmpfs rw
27 22 8:1 /pods/1/volumes/data /data rw,relatime - ext4 /dev/sda1 rw
28 22 8:1 /pods/1/etc-hosts /etc/hosts ro,relatime - ext4 /dev/sda1 rw
29 22 0:9 / /run/my\\040dir rw,nosuid,nodev,noexec - tmpfs tmpfs rw
30 22 0:10 / /sys rw,nosuid - sysfs sysfs rw
"""


def test_read_only_root_remounts_all_but_the_volumes_and_kernel_filesystems_keeping_their_flags() -> None:
    remounts = read_only_remounts(MOUNTINFO, ["/data", "/etc/hosts/"])
    assert {r.target: r.flags for r in remounts} == {
        "/": MS_RELATIME,
        "/tmp": MS_NOSUID | MS_NODEV,
        "/run/my dir": MS_NOSUID | MS_NODEV | MS_NOEXEC,
    }
