"""The Helm chart (charts/ganforge): its generated files, the kubectl bundle rendered from it, and
installing it.

Generated, from the sources they must match:
- `files/crds/*.yaml`: one file per CRD of manifests/crds (the chart's crds.yaml template renders
  them, with the keep annotation, so that `helm upgrade` upgrades them);
- `values.schema.json`: the chart's values, every object closed (`additionalProperties: false`,
  so a typo is an error), with `settings` described by the operator's own settings model, so a
  setting the operator does not know is refused at `helm install`, not at the operator's start;
- `manifests/install.yaml`: the chart rendered with its defaults (CRDs included, tests left out)
  after a Namespace that enforces the restricted Pod Security Standard, for `kubectl apply -f`;
- `files/alerts.yaml`: the alerts and the SLI recording rules of ganforge.observability.alerts
  (the chart's PrometheusRule embeds it; promtool tests it);
- `files/dashboards/*.json`: the Grafana dashboards of ganforge.observability.dashboards (the
  chart ships each as a ConfigMap for the Grafana sidecar);
- `gitops/argocd/argocd-cm-health.yaml`: the Argo CD health checks of both kinds (kept in Argo CD's
  own layout under gitops/argocd/resource_customizations) as the argocd-cm patch that installs them.

`python -m ganforge.local.chart` writes them (`make manifests` runs it; the bundle needs helm from
`make tools`); tests fail when a committed one is stale.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from ganforge.api.training_job import DNS_LABEL_PATTERN
from ganforge.local import tools
from ganforge.observability import alerts, dashboards
from ganforge.operator.settings import OperatorSettings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "ganforge"
CRD_SOURCES = ROOT / "manifests" / "crds"
INSTALL_BUNDLE = ROOT / "manifests" / "install.yaml"
ARGOCD = ROOT / "gitops" / "argocd"
HEALTH_CHECKS = ARGOCD / "resource_customizations"
# The release that `ganforge local install` and the bundle name: the operator's objects are
# called `ganforge-operator` (a release name containing "ganforge" is used as it is).
RELEASE = "ganforge-operator"
NAMESPACE = "ganforge-system"
LOCAL_VALUES = CHART / "ci" / "local-values.yaml"
# The operator Deployment's selector as the chart renders it for RELEASE (templates/_helpers.tpl).
OPERATOR_SELECTOR = {"app.kubernetes.io/name": "ganforge-operator", "app.kubernetes.io/instance": RELEASE}
NAMESPACE_MANIFEST = f"""# The operator's namespace enforces the restricted Pod Security Standard; its pod meets it.
apiVersion: v1
kind: Namespace
metadata:
  name: {NAMESPACE}
  labels:
    app.kubernetes.io/part-of: ganforge
    pod-security.kubernetes.io/enforce: restricted
"""

JsonDict = dict[str, Any]


def _closed(properties: JsonDict, **extra: Any) -> JsonDict:
    return {"type": "object", "additionalProperties": False, "properties": properties, **extra}


def _string_map() -> JsonDict:
    return {"type": "object", "additionalProperties": {"type": "string"}}


def _monitor() -> JsonDict:
    return _closed({"enabled": {"type": "boolean"},
                    "interval": {"type": "string", "pattern": r"^[0-9]+(ms|s|m|h)$"},
                    "labels": _string_map()})


def values_schema() -> JsonDict:
    settings = OperatorSettings.model_json_schema(by_alias=True)
    definitions = settings.pop("$defs", {})
    settings["description"] = "The operator's settings file (docs/operator.md)."
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Values of the ganforge chart",
        **_closed({
            # A parent chart passes these to every subchart.
            "global": {"type": "object"},
            "enabled": {"type": "boolean"},
            "crds": _closed({"enabled": {"type": "boolean"}, "keep": {"type": "boolean"}}),
            "image": _closed({
                "repository": {"type": "string", "minLength": 1},
                "tag": {"type": "string", "minLength": 1},
                "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
            }, required=["repository", "tag"]),
            "imagePullSecrets": {"type": "array", "items": _closed({"name": {"type": "string", "minLength": 1}},
                                                                   required=["name"])},
            "replicas": {"type": "integer", "minimum": 0, "maximum": 2},
            "peering": {"type": "string", "pattern": DNS_LABEL_PATTERN, "maxLength": 63},
            "serviceAccount": _closed({"create": {"type": "boolean"}, "name": {"type": "string"},
                                       "annotations": _string_map()}),
            "rbac": _closed({"create": {"type": "boolean"}}),
            "watchNamespaces": {"type": "array", "uniqueItems": True,
                                "items": {"type": "string", "pattern": DNS_LABEL_PATTERN, "maxLength": 63}},
            "settings": settings,
            "resources": _closed({"requests": _string_map(), "limits": _string_map()}),
            "nodeSelector": _string_map(),
            "tolerations": {"type": "array", "items": {"type": "object"}},
            "affinity": {"type": "object"},
            "podAnnotations": _string_map(),
            "metrics": _closed({
                "serviceMonitor": _monitor(), "podMonitor": _monitor(),
                "prometheusRule": _closed({"enabled": {"type": "boolean"}, "labels": _string_map()}),
                "dashboards": _closed({"enabled": {"type": "boolean"}, "labels": _string_map(),
                                       "namespace": {"type": "string"}}),
            }),
        }),
        "$defs": definitions,
    }


def crd_files() -> dict[str, str]:
    """File name -> content: each CRD of manifests/crds in a file of its own."""
    files = {}
    for source in sorted(CRD_SOURCES.glob("*.yaml")):
        for document in yaml.safe_load_all(source.read_text()):
            if document:
                name = document["metadata"]["name"]
                files[f"{name}.yaml"] = (f"# Generated by `make manifests` from manifests/crds/{source.name}.\n"
                                         + yaml.safe_dump(document, sort_keys=False, width=120))
    return files


def helm(*args: str, timeout: float = 300) -> str:
    result = subprocess.run([str(tools.tool_path("helm")), *args], capture_output=True, text=True,
                            timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def install_bundle() -> str:
    rendered = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--skip-tests",
                    "--kube-version", tools.versions().kubernetes)
    return ("# Generated by `make manifests`: charts/ganforge rendered with its default values (helm template),\n"
            "# after the operator's namespace. `kubectl apply -f manifests/install.yaml` installs ganforge.\n"
            + NAMESPACE_MANIFEST + rendered)


class _BlockStrings(yaml.SafeDumper):
    """Multi-line strings as literal blocks (`|`), as people write Lua in a ConfigMap."""


_BlockStrings.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None))


def argocd_health_patch() -> str:
    """argocd-cm data keys `resource.customizations.health.<group>_<Kind>` with each health.lua."""
    data = {}
    for script in sorted(HEALTH_CHECKS.glob("*/*/health.lua")):
        kind, group = script.parent.name, script.parent.parent.name
        data[f"resource.customizations.health.{group}_{kind}"] = script.read_text()
    patch = {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": "argocd-cm", "namespace": "argocd",
                          "labels": {"app.kubernetes.io/part-of": "argocd"}},
             "data": data}
    return ("# Generated by `make manifests` from gitops/argocd/resource_customizations/*/*/health.lua.\n"
            "# Merge into Argo CD's argocd-cm: kubectl -n argocd patch configmap argocd-cm --patch-file <this file>\n"
            + yaml.dump(patch, Dumper=_BlockStrings, sort_keys=False, width=120))


def generated_files() -> dict[Path, str]:
    """The chart's generated files and their content (Python only; the bundle needs helm)."""
    files = {CHART / "files" / "crds" / name: text for name, text in crd_files().items()}
    files[CHART / "values.schema.json"] = json.dumps(values_schema(), indent=2) + "\n"
    files[ARGOCD / "argocd-cm-health.yaml"] = argocd_health_patch()
    files[CHART / "files" / "alerts.yaml"] = (
        "# Generated by `make manifests` from ganforge/observability/alerts.py; runbooks in docs/runbooks/.\n"
        + yaml.safe_dump(alerts.rule_groups(), sort_keys=False, width=120))
    for dashboard in dashboards.dashboards():
        path = CHART / "files" / "dashboards" / f"{dashboard.uid}.json"
        files[path] = json.dumps(dashboard.to_json(), indent=2) + "\n"
    return files


def _write(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(text)
    partial.replace(path)
    print(f"wrote {path.relative_to(ROOT)}")


def main() -> int:
    generated = generated_files()
    for folder, pattern in ((CHART / "files" / "crds", "*.yaml"), (CHART / "files" / "dashboards", "*.json")):
        folder.mkdir(parents=True, exist_ok=True)
        for stale in set(folder.glob(pattern)) - set(generated):
            stale.unlink()
    for path, text in generated.items():
        _write(path, text)
    _write(INSTALL_BUNDLE, install_bundle())  # renders the files above
    return 0


if __name__ == "__main__":
    sys.exit(main())
