"""The Helm chart with the real helm and a real apiserver: lint, every ci/ scenario rendered and
validated server-side, the schema refusing typos and wrong types, the optional ServiceMonitor,
and the kubectl bundle rendered from it (stale = a failure)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ganforge.local import chart, tools
from ganforge.observability import alerts, dashboards
from ganforge.operator import children, serving_children
from tests.conftest import Kubectl
from tests.unit.operator.test_reconcile import JOB, SETTINGS, spec
from tests.unit.operator.test_serving_reconcile import GIS, REV2, SHA2
from tests.unit.operator.test_serving_reconcile import spec as service_spec

SCENARIOS = sorted((chart.CHART / "ci").glob("*-values.yaml"))
KUBE_VERSION = tools.versions().kubernetes


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(tools.tool_path("helm")), *args], capture_output=True, text=True, timeout=120,
                          check=False)


def render(*args: str) -> str:
    result = helm("template", chart.RELEASE, str(chart.CHART), "--namespace", chart.NAMESPACE,
                  "--kube-version", KUBE_VERSION, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def chart_crds(kubectl: Kubectl) -> None:
    """The CRDs must be served, and the namespaces exist, before a dry run can validate the rest."""
    kubectl.run("apply", "-f", "-", stdin=chart.NAMESPACE_MANIFEST)
    for values in SCENARIOS:
        for namespace in (yaml.safe_load(values.read_text()) or {}).get("watchNamespaces", []):
            kubectl.run("create", "namespace", namespace)
    kubectl.run("apply", "-f", str(chart.CRD_SOURCES))
    kubectl.run("wait", "--for=condition=Established", "--timeout=60s", "-f", str(chart.CRD_SOURCES))


@pytest.mark.parametrize("values", SCENARIOS, ids=[path.stem for path in SCENARIOS])
def test_each_scenario_lints_strictly_and_is_valid_on_the_apiserver(values: Path, kubectl: Kubectl,
                                                                     chart_crds: None) -> None:
    linted = helm("lint", "--strict", str(chart.CHART), "--values", str(values), "--kube-version", KUBE_VERSION)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    rendered = render("--values", str(values), "--skip-tests")  # `helm test` runs them: tests/e2e
    kinds = {doc["kind"] for doc in yaml.safe_load_all(rendered) if doc}
    assert {"Deployment", "ClusterRole", "ClusterRoleBinding", "ServiceAccount", "ConfigMap"} <= kinds
    result = kubectl.run("apply", "--dry-run=server", "-f", "-", stdin=rendered, check=False)
    assert result.returncode == 0, result.stderr
    assert "created (server dry run)" in result.stdout


def test_the_crds_are_templates_kept_on_uninstall_unless_asked_otherwise() -> None:
    crds = [doc for doc in yaml.safe_load_all(render()) if doc and doc["kind"] == "CustomResourceDefinition"]
    assert sorted(doc["metadata"]["name"] for doc in crds) == sorted(p.stem for p in (chart.CHART / "files" /
                                                                                      "crds").glob("*.yaml"))
    assert all(doc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep" for doc in crds)
    not_kept = [doc for doc in yaml.safe_load_all(render("--set", "crds.keep=false"))
                if doc and doc["kind"] == "CustomResourceDefinition"]
    assert not_kept and all("helm.sh/resource-policy" not in doc["metadata"].get("annotations", {})
                            for doc in not_kept)
    assert "CustomResourceDefinition" not in render("--set", "crds.enabled=false")


@pytest.mark.parametrize("values, message", [
    ("image: {repo: x}", "additional properties 'repo' not allowed"),
    ("settings: {trainerImag: x}", "additional properties 'trainerImag' not allowed"),
    ("settings: {trainerGraceSeconds: soon}", "at '/settings/trainerGraceSeconds': got string, want number"),
    ("replicas: many", "at '/replicas': got string, want integer"),
    ("metrics: {serviceMonitor: {interval: often}}", "/metrics/serviceMonitor/interval"),
    ("watchNamespaces: team-a", "at '/watchNamespaces': got string, want array"),
    ("watchNamespaces: [Team_A]", "/watchNamespaces/0"),
])
def test_the_schema_refuses_typos_and_wrong_types_naming_the_key(values: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(values)
    result = helm("template", "x", str(chart.CHART), "--kube-version", KUBE_VERSION, "--values", str(path))
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_as_a_subchart_it_accepts_global_and_enabled(tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_text("global: {imageRegistry: r.example.com}\nenabled: true\n")
    assert "kind: Deployment" in render("--values", str(path))


def test_the_service_monitor_needs_both_the_value_and_the_api() -> None:
    production = str(chart.CHART / "ci" / "production-values.yaml")
    assert "kind: ServiceMonitor" not in render("--values", production)
    with_api = render("--values", production, "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor")
    monitor = next(doc for doc in yaml.safe_load_all(with_api) if doc and doc["kind"] == "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert "kind: ServiceMonitor" not in render("--api-versions", "monitoring.coreos.com/v1/ServiceMonitor")


def test_the_alerts_and_dashboards_ship_as_generated() -> None:
    production = str(chart.CHART / "ci" / "production-values.yaml")
    assert "kind: PrometheusRule" not in render("--values", production)
    with_api = render("--values", production, "--api-versions", "monitoring.coreos.com/v1/PrometheusRule")
    documents = [doc for doc in yaml.safe_load_all(with_api) if doc]
    rule = next(doc for doc in documents if doc["kind"] == "PrometheusRule")
    assert rule["spec"] == alerts.rule_groups()
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    boards = {doc["metadata"]["name"]: doc for doc in documents
              if doc["kind"] == "ConfigMap" and "grafana_dashboard" in doc["metadata"]["labels"]}
    assert len(boards) == len(dashboards.dashboards())
    for board in boards.values():
        (name, text), = board["data"].items()
        assert json.loads(text) == next(d.to_json() for d in dashboards.dashboards() if f"{d.uid}.json" == name)
    assert "grafana_dashboard" not in render()  # off by default


def test_the_kubectl_bundle_is_the_chart_rendered() -> None:
    assert chart.INSTALL_BUNDLE.read_text() == chart.install_bundle(), "manifests/install.yaml is stale: make manifests"


def test_the_bundle_applies_in_one_shot_on_a_fresh_apiserver(kubectl: Kubectl) -> None:
    """Everything at once, CRDs included: no object in it needs a CRD of the same bundle."""
    result = kubectl.run("apply", "-f", str(chart.INSTALL_BUNDLE), check=False)
    assert result.returncode == 0, result.stderr
    assert "deployment.apps/ganforge-operator" in result.stdout


def test_the_argo_cd_application_renders_the_chart_with_its_values(tmp_path: Path) -> None:
    application = yaml.safe_load((chart.ARGOCD / "application.yaml").read_text())
    source = application["spec"]["source"]
    assert source["path"] == "charts/ganforge" and source["helm"]["releaseName"] == chart.RELEASE
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(source["helm"]["valuesObject"]))
    rendered = render("--values", str(values))
    deployment = next(doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] == "Deployment")
    image = source["helm"]["valuesObject"]["image"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == f"{image['repository']}:{image['tag']}"


def test_the_operator_selector_is_the_one_install_adopts_by() -> None:
    deployment = next(doc for doc in yaml.safe_load_all(render()) if doc and doc["kind"] == "Deployment")
    assert deployment["spec"]["selector"]["matchLabels"] == chart.OPERATOR_SELECTOR


def test_watching_listed_namespaces_grants_namespaced_rights_only_there() -> None:
    namespaced = str(chart.CHART / "ci" / "namespaced-values.yaml")
    docs = [doc for doc in yaml.safe_load_all(render("--values", namespaced)) if doc]
    cluster_role = next(doc for doc in docs if doc["kind"] == "ClusterRole")
    cluster_resources = {resource for rule in cluster_role["rules"] for resource in rule["resources"]}
    assert cluster_resources == {"nodes", "customresourcedefinitions"}
    # Reads only: nodes are watched (and one read by name when the watch has not shown it yet).
    assert all(set(rule["verbs"]) <= {"get", "list", "watch"} for rule in cluster_role["rules"])
    roles = {doc["metadata"]["namespace"]: doc for doc in docs if doc["kind"] == "Role"}
    bindings = {doc["metadata"]["namespace"] for doc in docs if doc["kind"] == "RoleBinding"}
    assert set(roles) == bindings == {"ganforge-team-a", "ganforge-team-b"}
    for role in roles.values():
        pods = next(rule for rule in role["rules"] if "pods" in rule["resources"])
        assert "create" in pods["verbs"]
        assert any("kopfpeerings" in rule["resources"] for rule in role["rules"])
    args = next(doc for doc in docs if doc["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=ganforge-team-a" in args and "--namespace=ganforge-team-b" in args

    everywhere = [doc for doc in yaml.safe_load_all(render()) if doc]
    assert not [doc for doc in everywhere if doc["kind"] in ("Role", "RoleBinding")]
    rules = next(doc for doc in everywhere if doc["kind"] == "ClusterRole")["rules"]
    assert any("pods" in rule["resources"] for rule in rules)
    assert any("clusterkopfpeerings" in rule["resources"] for rule in rules)


def _selects(monitor: dict[str, Any], pod: dict[str, Any]) -> bool:
    """Whether a PodMonitor's selector and port name match a pod, as the Prometheus Operator reads them."""
    labels = pod["metadata"]["labels"]
    selector = monitor["spec"]["selector"]
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    if not all(expression["operator"] == "Exists" and expression["key"] in labels
               for expression in selector.get("matchExpressions", [])):
        return False
    ports = {port.get("name") for container in pod["spec"]["containers"] for port in container.get("ports", [])}
    return all(endpoint["port"] in ports for endpoint in monitor["spec"]["podMetricsEndpoints"])


def test_the_pod_monitors_select_the_pods_the_operator_creates() -> None:
    production = str(chart.CHART / "ci" / "production-values.yaml")
    api = "monitoring.coreos.com/v1/PodMonitor"
    assert "kind: PodMonitor" not in render("--values", production)  # the API is not served
    assert "kind: PodMonitor" not in render("--api-versions", api)  # not asked for
    docs = yaml.safe_load_all(render("--values", production, "--api-versions", api))
    monitors = {doc["metadata"]["name"].rsplit("-", 1)[1]: doc for doc in docs if doc and doc["kind"] == "PodMonitor"}
    assert set(monitors) == {"trainers", "triton"}
    assert all(m["spec"]["namespaceSelector"] == {"any": True} for m in monitors.values())

    job_spec = spec()
    trainer = children.worker_pod(JOB, job_spec, SETTINGS, 1, 0, "sha")  # gang 1, rank 0
    other_rank = children.worker_pod(JOB, job_spec, SETTINGS, 1, 1, "sha")  # serves no metrics
    triton = serving_children.triton_deployment(GIS, service_spec(), "fashion", REV2, f"pvc://models/gan/{REV2}",
                                                SHA2, SETTINGS)["spec"]["template"]
    exporter = serving_children.export_pod(JOB, job_spec, SETTINGS, "pvc://ckpt/run/ckpt-1", 0)
    assert _selects(monitors["trainers"], trainer) and not _selects(monitors["trainers"], triton)
    assert not _selects(monitors["trainers"], other_rank)
    assert _selects(monitors["triton"], triton) and not _selects(monitors["triton"], trainer)
    assert not _selects(monitors["trainers"], exporter) and not _selects(monitors["triton"], exporter)

    namespaced = render("--values", str(chart.CHART / "ci" / "namespaced-values.yaml"), "--set",
                        "metrics.podMonitor.enabled=true", "--api-versions", api)
    selectors = [doc["spec"]["namespaceSelector"] for doc in yaml.safe_load_all(namespaced)
                 if doc and doc["kind"] == "PodMonitor"]
    assert selectors == [{"matchNames": ["ganforge-team-a", "ganforge-team-b"]}] * 2
