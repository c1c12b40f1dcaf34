"""What the node runtime enforces of a container's securityContext.

The runtime's images are the host's own files (a virtualenv, tools under the invoking user's
home), all owned by root and not necessarily readable by another host user. So a container keeps
host uid 0 for file access, but runs the way a kubelet runs it as far as the container can tell
and the kernel enforces:

- `runAsNonRoot`: checked before start, as kubelet checks it. The images here run as root, so a
  container must name a non-zero `runAsUser` (CreateContainerConfigError otherwise).
- `runAsUser` / `runAsGroup`: the process runs in a user namespace of its own in which it *is* that
  uid and gid (mapped onto host root, as rootless runtimes map theirs). It has no capability
  outside that namespace: it cannot mount, chown, load modules, or signal other users' processes.
- `allowPrivilegeEscalation: false`: the no_new_privs bit.
- `capabilities.drop` (`ALL` or names): removed from the bounding and ambient sets before exec, so
  neither the process nor anything it executes can hold them.
- `readOnlyRootFilesystem`: every mount the container did not get as a volume (and is not /proc,
  /sys or /dev) is remounted read-only in a mount namespace of the container's own, so a write
  outside its volumes fails with EROFS as it would in a real container.

Not enforced: seccomp profiles, fsGroup/supplementalGroups ownership, AppArmor/SELinux.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

# <sched.h>, <sys/mount.h>, <linux/prctl.h>
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 0x400, 0x800, 0x200000
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x20, 0x1000, 0x4000, 0x40000
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 38, 47, 4
# Per-mount flags a bind remount must repeat, or it would clear them.
MOUNT_OPTION_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
                      "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME}
# Kernel filesystems a container runtime mounts afresh (writable where a container may write).
KERNEL_PREFIXES = ("/proc", "/sys", "/dev")
# <linux/capability.h>, for names in capabilities.drop.
CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE",
)


class SecurityContextError(ValueError):
    """A securityContext the runtime refuses to start, as kubelet refuses it."""


@dataclass
class ProcessSecurity:
    run_as_user: int | None = None
    run_as_group: int | None = None
    no_new_privileges: bool = False
    drop_capabilities: list[int] = field(default_factory=list)
    read_only_root: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def resolve(pod_spec: Mapping[str, Any], container: Mapping[str, Any]) -> ProcessSecurity:
    """The container's effective settings (its own securityContext over the pod's), or
    SecurityContextError with kubelet's reason."""
    pod = pod_spec.get("securityContext") or {}
    own = container.get("securityContext") or {}

    def setting(key: str) -> Any:
        return own[key] if own.get(key) is not None else pod.get(key)

    user, group = setting("runAsUser"), setting("runAsGroup")
    if setting("runAsNonRoot"):
        if user is None:
            raise SecurityContextError(
                "container has runAsNonRoot and image will run as root (the local runtime's images run as "
                "root: set runAsUser)")
        if int(user) == 0:
            raise SecurityContextError("container's runAsUser breaks non-root policy")
    drop = [str(name).upper().removeprefix("CAP_") for name in (own.get("capabilities") or {}).get("drop") or []]
    unknown = sorted(set(drop) - {"ALL", *CAPABILITIES})
    if unknown:
        raise SecurityContextError(f"securityContext.capabilities.drop: unknown capabilities {unknown}")
    numbers = list(range(len(CAPABILITIES))) if "ALL" in drop else sorted(CAPABILITIES.index(n) for n in set(drop))
    return ProcessSecurity(
        run_as_user=None if user is None else int(user),
        run_as_group=None if group is None else int(group),
        no_new_privileges=own.get("allowPrivilegeEscalation") is False,
        drop_capabilities=numbers,
        read_only_root=bool(own.get("readOnlyRootFilesystem")),
    )


@dataclass(frozen=True)
class Remount:
    target: str
    flags: int  # the mount's own flags to keep (nosuid, nodev, ...)


def read_only_remounts(mountinfo: str, volume_targets: Iterable[str]) -> list[Remount]:
    """The mounts of /proc/self/mountinfo to make read-only for readOnlyRootFilesystem: all but the
    container's volumes and the kernel filesystems. Each mount's flags are its own, so the order
    does not matter: a read-only parent leaves the mounts beneath it as they are."""
    keep = {os.path.normpath(target) for target in volume_targets}
    remounts = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 6:
            continue
        target = _unescape(fields[4])
        if target in keep or any(target == p or target.startswith(p + "/") for p in KERNEL_PREFIXES):
            continue
        options = fields[5].split(",")
        flags = sum(flag for option, flag in MOUNT_OPTION_FLAGS.items() if option in options)
        remounts.append(Remount(target, flags))
    return remounts


def _unescape(path: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for escaped, plain in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        path = path.replace(escaped, plain)
    return path


def apply_before_exec(security: ProcessSecurity, remounts: list[Remount]) -> None:
    """Run in the forked child just before exec (subprocess's preexec_fn): the mounts first, while
    the process still holds CAP_SYS_ADMIN over its mount namespace; then the user namespace; then
    the capability bounding set. Raises OSError naming the step that failed."""
    libc = ctypes.CDLL(None, use_errno=True)

    def check(result: int, what: str) -> None:
        if result != 0:
            number = ctypes.get_errno()
            raise OSError(number, f"{what}: {os.strerror(number)}")

    if security.read_only_root:
        check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "making the container's mounts private")
        for remount in remounts:
            result = libc.mount(None, remount.target.encode(), None,
                                MS_REMOUNT | MS_BIND | MS_RDONLY | remount.flags, None)
            # A mount gone since mountinfo was read is nothing to protect.
            if result != 0 and ctypes.get_errno() not in (2, 22):  # ENOENT, EINVAL
                check(result, f"remounting {remount.target} read-only")
    if security.no_new_privileges:
        check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    if security.run_as_user not in (None, 0) or security.run_as_group not in (None, 0):
        check(libc.unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
        _write("/proc/self/uid_map", f"{security.run_as_user or 0} 0 1\n")
        _write("/proc/self/setgroups", "deny\n")
        _write("/proc/self/gid_map", f"{security.run_as_group or 0} 0 1\n")
    last = _last_capability()
    for number in security.drop_capabilities:
        if number <= last:
            check(libc.prctl(PR_CAPBSET_DROP, number, 0, 0, 0), f"dropping capability {CAPABILITIES[number]}")
    if security.drop_capabilities:
        check(libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clearing ambient capabilities")


def _write(path: str, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY)
    try:
        os.write(descriptor, text.encode())
    finally:
        os.close(descriptor)


def _last_capability() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as file:
            return int(file.read())
    except (OSError, ValueError):
        return len(CAPABILITIES) - 1
