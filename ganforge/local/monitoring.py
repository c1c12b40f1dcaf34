"""Prometheus for `ganforge local`: the real Prometheus (Debian's `prometheus`, from `make tools`)
beside the control plane, evaluating ganforge's own alerting and recording rules
(charts/ganforge/files/alerts.yaml), and finding what to scrape through the apiserver.

Debian builds Prometheus without kubernetes_sd (its patch "Disable kubernetes SD, until
dependencies are more reasonable"), so targets come through Prometheus's HTTP service discovery
from `PodTargets`, which lists pods from the apiserver with the selections the chart's
ServiceMonitor and PodMonitors give a Prometheus Operator: the operator's pods (port `metrics`),
rank 0 of every training gang (port `metrics`), every Triton revision (port `metrics`) and the
gateway's Traefik (port `admin`). Pods are reached at their pod IPs, which the host routes to.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from ganforge.local.chart import CHART
from ganforge.local.control_plane import ControlPlane, free_port
from ganforge.local.processes import ManagedProcess
from ganforge.local.service_support import api_client, grant_cluster_role, http_ok, launch, wait_until

RULES = CHART / "files" / "alerts.yaml"
PROMETHEUS_USER = "ganforge:prometheus"
PROMETHEUS_ROLE = "ganforge:local-prometheus"
# Short enough that a trainer living a minute or two is scraped many times.
SCRAPE_INTERVAL = "5s"
_RULES = [client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["list"])]


# job -> (label selector, container port name)
SCRAPE_JOBS = {
    "ganforge-operator": ("app.kubernetes.io/name=ganforge-operator", "metrics"),
    "ganforge-trainer": ("app.kubernetes.io/managed-by=ganforge-operator,ganforge.io/rank=0", "metrics"),
    "triton": ("app.kubernetes.io/managed-by=ganforge-operator,ganforge.io/revision", "metrics"),
    "gateway": ("app.kubernetes.io/name=traefik", "admin"),
}


def pod_targets(pods: list[Any], port_name: str) -> list[dict[str, Any]]:
    """Prometheus HTTP SD target groups: one per running pod that has a container port `port_name`."""
    groups = []
    for pod in pods:
        if pod.status.phase != "Running" or not pod.status.pod_ip:
            continue
        ports = [p.container_port for c in pod.spec.containers for p in (c.ports or []) if p.name == port_name]
        if ports:
            groups.append({"targets": [f"{pod.status.pod_ip}:{ports[0]}"],
                           "labels": {"namespace": pod.metadata.namespace, "pod": pod.metadata.name,
                                      "node": pod.spec.node_name or ""}})
    return groups


class PodTargets:
    """GET /<job> answers the job's targets, listed from the apiserver on every request."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, name="prometheus-sd", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        targets = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                job = SCRAPE_JOBS.get(self.path.strip("/"))
                if job is None:
                    self.send_error(404, f"no scrape job {self.path}")
                    return
                try:
                    body = json.dumps(targets.list(*job)).encode()
                except Exception as error:  # Prometheus keeps its last targets and retries
                    self.send_error(503, str(error))
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def list(self, selector: str, port_name: str) -> list[dict[str, Any]]:
        with api_client(self.kubeconfig) as api:
            pods = client.CoreV1Api(api).list_pod_for_all_namespaces(label_selector=selector).items
        return pod_targets(pods, port_name)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def prometheus_config(discovery_url: str) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": job, "scrape_interval": SCRAPE_INTERVAL,
                            # The operator's series name their objects' namespaces: with honor_labels
                            # theirs wins over the operator pod's (the chart's ServiceMonitor does the same).
                            "honor_labels": job == "ganforge-operator",
                            "http_sd_configs": [{"url": f"{discovery_url}/{job}", "refresh_interval": SCRAPE_INTERVAL}]}
                           for job in SCRAPE_JOBS],
    }


@dataclass
class LocalPrometheus:
    plane: ControlPlane
    port: int = 0
    process: ManagedProcess | None = field(default=None, init=False)
    discovery: PodTargets | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed: `make tools` installs it (Debian package prometheus)")
        deadline = time.monotonic() + timeout
        with api_client(self.plane.admin_kubeconfig) as api:
            grant_cluster_role(api, PROMETHEUS_ROLE, PROMETHEUS_USER, _RULES)
        self.discovery = PodTargets(self.plane.issue_client_kubeconfig("prometheus", PROMETHEUS_USER))
        self.discovery.start()
        config_path = self.plane.workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(prometheus_config(self.discovery.url), sort_keys=False))
        self.port = self.port or free_port()
        self.process = launch(self.plane, "prometheus", [
            binary, f"--config.file={config_path}", f"--storage.tsdb.path={self.plane.workdir / 'prometheus'}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=7d"])
        try:
            wait_until(self.process, lambda: http_ok(f"{self.url}/-/ready"), deadline, f"Prometheus {self.url}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None
        if self.discovery is not None:
            self.discovery.stop()
            self.discovery = None
