"""A container's memory limit, as kubelet's runtime enforces it: the container runs in a memory
cgroup of its own whose limit is `resources.limits.memory`; when the kernel kills a process of it
for going over, the container's exit is reported as `OOMKilled` (exit code 137), as on any node.

The agent makes the group and starts the container's shim in it (the shim's network namespace
has a sysfs of its own, without cgroups), so the shim's own few MiB count against the limit too;
the agent reads the kill counter once the attempt has ended, and removes the group.

Both cgroup layouts are handled: v1 (a `memory` hierarchy: `memory.limit_in_bytes`, the kill
counted in `memory.oom_control`) and v2 (a unified hierarchy with the memory controller:
`memory.max`, counted in `memory.events`). Where neither is writable, the limit is not enforced and
the agent says so in the attempt's directory (`memory-not-enforced`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ganforge.local.node.environment import parse_quantity

CGROUP_ROOT = Path("/sys/fs/cgroup")
GROUP_PARENT = "ganforge"


@dataclass(frozen=True)
class MemoryCgroup:
    path: Path
    version: int

    @property
    def procs(self) -> Path:
        """Writing a pid here moves that process in; its children are born in the group."""
        return self.path / "cgroup.procs"

    def oom_kills(self) -> int:
        """Processes the kernel killed in this group for going over its limit."""
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        for line in (self.path / name).read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def remove(self) -> None:
        """Delete the group; OSError (EBUSY) while a process of it is still exiting."""
        try:
            self.path.rmdir()
        except FileNotFoundError:
            pass


def memory_limit(container: Mapping[str, Any]) -> int | None:
    """A container's resources.limits.memory in bytes; None without one."""
    value = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    return int(parse_quantity(str(value))) if value is not None else None


def _hierarchy() -> tuple[Path, int] | None:
    """Where memory cgroups are made on this machine, and the layout's version."""
    v1 = CGROUP_ROOT / "memory"
    if (v1 / "memory.limit_in_bytes").exists():
        return v1, 1
    controllers = CGROUP_ROOT / "cgroup.controllers"
    if controllers.exists() and "memory" in controllers.read_text().split():
        return CGROUP_ROOT, 2
    return None


def _group_path(root: Path, attempt_dir: Path) -> Path:
    return root / GROUP_PARENT / hashlib.sha256(str(attempt_dir.resolve()).encode()).hexdigest()[:20]


def existing(attempt_dir: Path) -> MemoryCgroup | None:
    """The group made for this attempt, if it is still there."""
    found = _hierarchy()
    if found is None:
        return None
    group = _group_path(found[0], attempt_dir)
    return MemoryCgroup(group, found[1]) if group.is_dir() else None


def create(attempt_dir: Path, limit_bytes: int) -> MemoryCgroup:
    """A new memory cgroup limited to `limit_bytes` for one container attempt. Raises OSError
    where this machine offers no writable memory controller."""
    found = _hierarchy()
    if found is None:
        raise OSError(f"no memory cgroup controller under {CGROUP_ROOT}")
    root, version = found
    parent = root / GROUP_PARENT
    parent.mkdir(exist_ok=True)
    if version == 2:
        # Children of `parent` may only be limited once the controller is enabled for them.
        (root / "cgroup.subtree_control").write_text("+memory")
        (parent / "cgroup.subtree_control").write_text("+memory")
    group = _group_path(root, attempt_dir)
    group.mkdir(exist_ok=True)
    if version == 1:
        (group / "memory.limit_in_bytes").write_text(str(limit_bytes))
        swap = group / "memory.memsw.limit_in_bytes"
        if swap.exists():  # no swapping past the limit either, as kubelet runs nodes without swap
            swap.write_text(str(limit_bytes))
    else:
        (group / "memory.max").write_text(str(limit_bytes))
        if (group / "memory.swap.max").exists():
            (group / "memory.swap.max").write_text("0")
    return MemoryCgroup(group, version)
