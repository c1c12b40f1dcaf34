"""Pods reach Services by DNS name and ClusterIP, and the apiserver with their own token."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.helpers import eventually

WEB_SERVER = """
import http.server, os
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = os.environ["POD_NAME"].encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args): pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
"""


def web_deployment() -> dict[str, Any]:
    labels = {"app": "web"}
    container = {
        "name": "web", "image": "python:3.11", "command": ["python", "-c", WEB_SERVER],
        "ports": [{"containerPort": 8080, "name": "http"}],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}}},
    }


def one_shot(name: str, script: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", **spec,
                 "containers": [{"name": "main", "image": "python:3.11",
                                 "command": ["python", "-c", textwrap.dedent(script)]}]},
    }


def finished(core: client.CoreV1Api, namespace: str, name: str) -> client.V1Pod | None:
    pod = core.read_namespaced_pod(name, namespace)
    return pod if pod.status.phase in ("Succeeded", "Failed") else None


def test_pods_reach_a_service_by_dns_name(local_core: client.CoreV1Api, local_namespace: str,
                                          tmp_path: Path) -> None:
    core, ns = local_core, local_namespace
    client.AppsV1Api(core.api_client).create_namespaced_deployment(ns, web_deployment())
    core.create_namespaced_service(ns, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
    })

    def ready_pods() -> list[client.V1Pod] | None:
        pods = core.list_namespaced_pod(ns, label_selector="app=web").items
        ready = [p for p in pods if p.status.container_statuses and p.status.container_statuses[0].ready]
        return ready if len(ready) == 2 else None

    pods = eventually(ready_pods, timeout=90, what="two ready web pods")
    assert len({pod.status.pod_ip for pod in pods}) == 2, "every pod has its own IP"

    out = tmp_path / "answers"
    # Ready pods are not yet programmed endpoints: the EndpointSlice controller, CoreDNS and kube-proxy
    # follow on their own time, so the first lookup and request are retried for a while.
    client_script = f"""
        import socket, time, urllib.request
        def ask():
            return urllib.request.urlopen("http://web/", timeout=5).read().decode()
        deadline = time.monotonic() + 60
        while True:
            try:
                addresses = {{socket.gethostbyname(name) for name in ("web", "web.{ns}.svc.cluster.local")}}
                first = ask()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        answers = {{first}} | {{ask() for _ in range(29)}}
        open({str(out)!r}, "w").write(" ".join(sorted(addresses)) + "\\n" + " ".join(sorted(answers)))
    """
    core.create_namespaced_pod(ns, one_shot("caller", client_script))
    done = eventually(lambda: finished(core, ns, "caller"), timeout=150, what="the caller pod to finish")
    assert done.status.phase == "Succeeded", done.status.container_statuses
    addresses, answers = out.read_text().split("\n")
    service_ip = core.read_namespaced_service("web", ns).spec.cluster_ip
    assert addresses.split() == [service_ip]
    assert set(answers.split()) <= {pod.metadata.name for pod in pods}
    assert answers.split(), "the Service answered"


def test_pod_service_account_token_is_authorized_by_rbac(local_core: client.CoreV1Api, local_namespace: str,
                                                          tmp_path: Path) -> None:
    core, ns = local_core, local_namespace
    core.create_namespaced_service_account(ns, {"metadata": {"name": "lister"}})
    rbac = client.RbacAuthorizationV1Api(core.api_client)
    rbac.create_namespaced_role(ns, {
        "metadata": {"name": "read-configmaps"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
    })
    rbac.create_namespaced_role_binding(ns, {
        "metadata": {"name": "lister"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-configmaps"},
        "subjects": [{"kind": "ServiceAccount", "name": "lister", "namespace": ns}],
    })
    out = tmp_path / "result"
    script = f"""
        from kubernetes import client, config
        from kubernetes.client.exceptions import ApiException
        config.load_incluster_config()
        core = client.CoreV1Api()
        listed = len(core.list_namespaced_config_map({ns!r}).items)
        try:
            core.list_namespaced_secret({ns!r})
            secrets = "allowed"
        except ApiException as error:
            secrets = str(error.status)
        open({str(out)!r}, "w").write(f"{{listed}} {{secrets}}")
    """
    core.create_namespaced_pod(ns, one_shot("in-cluster", script, serviceAccountName="lister"))
    done = eventually(lambda: finished(core, ns, "in-cluster"), timeout=90, what="the in-cluster pod to finish")
    assert done.status.phase == "Succeeded", done.status.container_statuses
    listed, secrets = out.read_text().split()
    assert int(listed) >= 1  # kube-root-ca.crt is in every namespace
    assert secrets == "403"
