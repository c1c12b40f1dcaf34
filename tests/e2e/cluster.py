"""What the e2e tests do to and read from the local cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client import ApiClient

from ganforge.api.training_job import API_GROUP, VERSION
from ganforge.local.install import kubectl


def apply(kubeconfig: Path, namespace: str, document: dict[str, Any], tmp_path: Path) -> None:
    """`kubectl apply` of one document, as a user would (written to a file first)."""
    path = tmp_path / f"{document['kind']}-{document['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(document))
    kubectl(kubeconfig, "apply", "-n", namespace, "-f", str(path))


def status_of(api: ApiClient, namespace: str, plural: str, name: str) -> dict[str, Any]:
    body = client.CustomObjectsApi(api).get_namespaced_custom_object(API_GROUP, VERSION, namespace, plural, name)
    return body.get("status") or {}  # type: ignore[no-any-return]
