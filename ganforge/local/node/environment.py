"""A container's environment and argv, resolved the way kubelet resolves them.

Pods are handled as the raw JSON the API serves (camelCase), the same shape users write.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from ganforge.local.network import KUBERNETES_SERVICE_IP

Pod = dict[str, Any]
# (kind, namespace, name) -> data, for configMapKeyRef / secretKeyRef / envFrom lookups.
ObjectData = Callable[[str, str, str], Mapping[str, str] | None]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# sethostname(2) takes at most 64 bytes including the terminating NUL.
HOSTNAME_MAX_LENGTH = 63


class ContainerConfigError(ValueError):
    """A reference in env/envFrom cannot be resolved (kubelet's CreateContainerConfigError)."""


def pod_hostname(pod: Pod) -> str:
    """spec.hostname or the pod's name, truncated as kubelet does (no trailing '-' or '.')."""
    hostname: str = pod["spec"].get("hostname") or pod["metadata"]["name"]
    if len(hostname) <= HOSTNAME_MAX_LENGTH:
        return hostname
    return hostname[:HOSTNAME_MAX_LENGTH].rstrip("-.")


def pod_host_domain(pod: Pod, cluster_domain: str) -> str | None:
    """`<subdomain>.<namespace>.svc.<cluster domain>` when spec.subdomain is set, as kubelet derives it."""
    subdomain = pod["spec"].get("subdomain")
    if not subdomain:
        return None
    return f"{subdomain}.{pod['metadata']['namespace']}.svc.{cluster_domain}"


def hosts_file(pod_ip: str, hostname: str, host_domain: str | None) -> str:
    """The pod's /etc/hosts in kubelet's layout: with a subdomain the FQDN comes first, so it is the
    canonical name that `hostname -f` and `socket.getfqdn()` report."""
    own = f"{pod_ip}\t{hostname}.{host_domain}\t{hostname}" if host_domain else f"{pod_ip}\t{hostname}"
    return (
        "# Kubernetes-managed hosts file.\n"
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "fe00::0\tip6-localnet\n"
        "fe00::0\tip6-mcastprefix\n"
        "fe00::1\tip6-allnodes\n"
        "fe00::2\tip6-allrouters\n"
        f"{own}\n"
    )


def field_ref(pod: Pod, path: str) -> str:
    """Resolve a downward-API fieldPath such as `metadata.labels['app']` or `status.podIP`."""
    metadata, spec, status = pod["metadata"], pod["spec"], pod.get("status", {})
    simple = {
        "metadata.name": metadata.get("name", ""),
        "metadata.namespace": metadata.get("namespace", ""),
        "metadata.uid": metadata.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.hostIP": status.get("hostIP", ""),
        "status.podIP": status.get("podIP", ""),
    }
    if path in simple:
        return str(simple[path])
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return str(metadata.get(match.group(1), {}).get(match.group(2), ""))
    if path in {"metadata.labels", "metadata.annotations"}:
        items = metadata.get(path.split(".")[1], {})
        return "\n".join(f'{key}="{value}"' for key, value in sorted(items.items()))
    raise ContainerConfigError(f"unsupported fieldPath {path!r}")


_QUANTITY_SUFFIXES = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "m": 10**-3,
}


def parse_quantity(value: str) -> float:
    for suffix in sorted(_QUANTITY_SUFFIXES, key=len, reverse=True):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * _QUANTITY_SUFFIXES[suffix]
    return float(value)


def _resource_field(container: Mapping[str, Any], selector: Mapping[str, Any]) -> str:
    kind, _, resource = selector["resource"].partition(".")
    value = container.get("resources", {}).get(kind, {}).get(resource)
    if value is None:
        return "0"
    divisor = parse_quantity(str(selector.get("divisor", "1")))
    quantity = parse_quantity(str(value)) / divisor
    # kubelet rounds up: a 500m cpu limit with divisor 1 reads as "1".
    return str(int(-(-quantity // 1)))


def _expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: `$$` escapes, unknown references stay as written."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", replace, text)


def container_environment(
    pod: Pod,
    container: Mapping[str, Any],
    lookup: ObjectData,
    base: Mapping[str, str],
) -> dict[str, str]:
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = dict(base)
    env.setdefault("PATH", DEFAULT_PATH)
    env["HOSTNAME"] = pod_hostname(pod)
    env["KUBERNETES_SERVICE_HOST"] = KUBERNETES_SERVICE_IP
    env["KUBERNETES_SERVICE_PORT"] = "443"
    env["KUBERNETES_SERVICE_PORT_HTTPS"] = "443"
    env["KUBERNETES_PORT"] = f"tcp://{KUBERNETES_SERVICE_IP}:443"

    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            kind, ref = "ConfigMap", source["configMapRef"]
        else:
            kind, ref = "Secret", source["secretRef"]
        data = lookup(kind, namespace, ref["name"])
        if data is None:
            if ref.get("optional"):
                continue
            raise ContainerConfigError(f"envFrom: {kind.lower()} {ref['name']!r} not found")
        env.update({source.get("prefix", "") + key: value for key, value in data.items()})

    for item in container.get("env", []):
        name = item["name"]
        if "valueFrom" not in item:
            env[name] = _expand(item.get("value", ""), env)
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            env[name] = field_ref(pod, source["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in source:
            env[name] = _resource_field(container, source["resourceFieldRef"])
        else:
            if "configMapKeyRef" in source:
                kind, ref = "ConfigMap", source["configMapKeyRef"]
            else:
                kind, ref = "Secret", source["secretKeyRef"]
            data = lookup(kind, namespace, ref["name"])
            if data is None or ref["key"] not in data:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(
                    f"env {name}: key {ref['key']!r} of {kind.lower()} {ref['name']!r} not found"
                )
            env[name] = data[ref["key"]]
    return env


def container_argv(container: Mapping[str, Any], entrypoint: tuple[str, ...], env: Mapping[str, str]) -> list[str]:
    """command replaces the image entrypoint; args alone are appended to it, as in Kubernetes."""
    command = container.get("command") or list(entrypoint)
    argv = [*command, *container.get("args", [])]
    if not argv:
        raise ContainerConfigError(f"container {container['name']!r} has no command and its image no entrypoint")
    return [_expand(part, env) for part in argv]

