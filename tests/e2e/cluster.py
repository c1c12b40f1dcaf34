"""What the e2e tests do to and read from the local cluster."""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
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


def kill_container(cluster_workdir: Path, pod: client.V1Pod, container: str) -> None:
    """SIGKILL the running process of a pod's container on the local node runtime, as an OOM kill
    or a crash would end it."""
    started = sorted(cluster_workdir.glob(f"nodes/*/pods/{pod.metadata.uid}/containers/{container}/*/started.json"),
                     key=lambda path: int(path.parent.name))
    if not started:
        raise LookupError(f"no running {container} container of pod {pod.metadata.name} under {cluster_workdir}")
    pid = int(json.loads(started[-1].read_text())["pid"])
    os.killpg(pid, signal.SIGKILL)


def gateway_requests(metrics_url: str) -> dict[str, float]:
    """Requests Traefik sent to each backend Service (`<namespace>-<service>-<port name>-<port>`),
    all status codes together, from its Prometheus endpoint."""
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r'traefik_service_requests_total\{.*service="([^"@]+)@kubernetesgateway".*\} (\S+)$', line)
        if match:
            counts[match[1]] = counts.get(match[1], 0.0) + float(match[2])
    return counts


def prometheus(url: str, path: str, **params: str) -> Any:
    """One answer of the Prometheus HTTP API (`data`)."""
    query = urllib.parse.urlencode(params)
    with urllib.request.urlopen(f"{url}/api/v1/{path}?{query}", timeout=10) as response:
        answer = json.loads(response.read())
    assert answer["status"] == "success", answer
    return answer["data"]


def query_until(url: str, query: str, accept: Callable[[list[dict[str, Any]]], bool],
                timeout: float = 60) -> list[dict[str, Any]]:
    """The samples of an instant query once `accept` holds for them: what just happened reaches
    Prometheus at its next scrape (5 s on ganforge local), so wait a few scrapes for it."""
    deadline = time.monotonic() + timeout
    while True:
        samples: list[dict[str, Any]] = prometheus(url, "query", query=query)["result"]
        if accept(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout:.0f} s, {query} gives {samples}")
        time.sleep(2)


def assert_scraped(url: str, names: set[str], timeout: float = 60) -> None:
    """Every series name in `names` has samples in Prometheus (waiting a few scrapes for them)."""
    def missing() -> set[str]:
        return names - set(prometheus(url, "label/__name__/values"))

    deadline = time.monotonic() + timeout
    while missing() and time.monotonic() < deadline:
        time.sleep(2)
    if missing():
        health = [(t["labels"]["job"], t["scrapeUrl"], t["health"], t["lastError"])
                  for t in prometheus(url, "targets")["activeTargets"]]
        raise AssertionError(f"Prometheus has no samples of {sorted(missing())}; its targets: {health}")
