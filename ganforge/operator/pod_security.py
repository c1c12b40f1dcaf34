"""The security settings of every pod the operator creates.

What the `restricted` Pod Security Standard requires, so that jobs and services run in namespaces
that enforce it: a non-root user (the images' user, 65532, as in the Dockerfile), no privilege
escalation, every capability dropped, the runtime's default seccomp profile. The claims' files
belong to the same group (fsGroup), so a checkpoint or model written by one pod is readable and
writable by the next.

An API token is mounted only into the pods that call the apiserver: rank 0 of a gang, which
reports the job's progress into its status. Other ranks, export, Triton and analysis pods get none.
"""

from __future__ import annotations

from typing import Any

IMAGE_USER = 65532


def restricted(pod_spec: dict[str, Any], api_token: bool = False) -> dict[str, Any]:
    """`pod_spec` with the pod's and each container's securityContext set, and a ServiceAccount
    token only if `api_token` (in place, returned)."""
    pod_spec["automountServiceAccountToken"] = api_token
    pod_spec["securityContext"] = {"runAsNonRoot": True, "runAsUser": IMAGE_USER, "runAsGroup": IMAGE_USER,
                                   "fsGroup": IMAGE_USER, "seccompProfile": {"type": "RuntimeDefault"}}
    for container in [*pod_spec.get("initContainers", []), *pod_spec["containers"]]:
        container["securityContext"] = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    return pod_spec
