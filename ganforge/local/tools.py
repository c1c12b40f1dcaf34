"""Where the external tools built by `make tools` live, and a clear error when one is missing."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

_VERSIONS_FILE = Path(__file__).with_name("tool_versions.env")

# tool binary -> (directory prefix in the cache, key in tool_versions.env[, path inside that directory])
_TOOL_HOMES: dict[str, tuple[str, ...]] = {
    "kube-apiserver": ("kubernetes", "KUBERNETES_VERSION"),
    "kube-controller-manager": ("kubernetes", "KUBERNETES_VERSION"),
    "kube-scheduler": ("kubernetes", "KUBERNETES_VERSION"),
    "kube-proxy": ("kubernetes", "KUBERNETES_VERSION"),
    "kubectl": ("kubernetes", "KUBERNETES_VERSION"),
    "etcd": ("etcd", "ETCD_VERSION"),
    "coredns": ("coredns", "COREDNS_VERSION"),
    "helm": ("helm", "HELM_VERSION"),
    # A launcher that runs nvidia-pytriton's tritonserver as the NGC image would (hack/tools.sh).
    "tritonserver": ("triton", "PYTRITON_VERSION", "bin/tritonserver"),
    "traefik": ("traefik", "TRAEFIK_VERSION"),
}


class ToolMissingError(RuntimeError):
    """A binary that `make tools` should have built is not in the cache."""


@dataclass(frozen=True)
class ToolVersions:
    kubernetes: str
    etcd: str
    helm: str
    coredns: str


@cache
def _read_versions() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in _VERSIONS_FILE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def versions() -> ToolVersions:
    raw = _read_versions()
    return ToolVersions(
        kubernetes=raw["KUBERNETES_VERSION"],
        etcd=raw["ETCD_VERSION"],
        helm=raw["HELM_VERSION"],
        coredns=raw["COREDNS_VERSION"],
    )


def cache_dir() -> Path:
    configured = os.environ.get("GANFORGE_TOOLS_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "ganforge" / "tools"


def tool_path(name: str) -> Path:
    """The cached binary `name`; raises ToolMissingError naming the fix when it is absent."""
    if name not in _TOOL_HOMES:
        raise KeyError(f"unknown tool {name!r}; known: {sorted(_TOOL_HOMES)}")
    prefix, version_key, *inside = _TOOL_HOMES[name]
    path = cache_dir() / f"{prefix}-{_read_versions()[version_key]}" / (inside[0] if inside else name)
    if not os.access(path, os.X_OK):
        raise ToolMissingError(f"{name} not found at {path}; run `make tools` to build it")
    return path


def gateway_api_crds() -> Path:
    """The directory of the Gateway API CRDs (standard channel) that `make tools` installs."""
    path = cache_dir() / f"gateway-api-{_read_versions()['GATEWAY_API_VERSION']}"
    if not (path / ".complete").is_file():
        raise ToolMissingError(f"the Gateway API CRDs are not at {path}; run `make tools` to install them")
    return path
