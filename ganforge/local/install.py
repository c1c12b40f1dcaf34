"""Install ganforge into a cluster the way a platform team would: `helm install` of charts/ganforge
(CRDs, RBAC, the operator Deployment), and, for `ganforge local`, the Gateway API with Traefik."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

from ganforge.local import chart, tools

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
EXAMPLE_JOB = MANIFESTS / "examples" / "fashion-mnist-dcgan.yaml"
EXAMPLE_SERVICE = MANIFESTS / "examples" / "fashion-mnist-gis.yaml"
OPERATOR_NAMESPACE = chart.NAMESPACE
OPERATOR_DEPLOYMENT = chart.RELEASE  # the chart names the release's objects after it
# The Gateway ganforge local offers GANInferenceServices (manifests/gateway/traefik.yaml).
GATEWAY_MANIFEST = MANIFESTS / "gateway" / "traefik.yaml"
GATEWAY_NAMESPACE = "ganforge-gateway"
GATEWAY_NAME = "ganforge"
GATEWAY_SERVICE = "traefik"


class InstallError(RuntimeError):
    pass


def kubectl(kubeconfig: Path, *args: str, timeout: float = 120) -> str:
    command = [str(tools.tool_path("kubectl")), "--kubeconfig", str(kubeconfig), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise InstallError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def install(kubeconfig: Path, timeout: float = 240) -> None:
    """`helm upgrade --install` of charts/ganforge with the local values into a namespace that
    enforces the restricted Pod Security Standard. Idempotent; returns once the operator is available."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as namespace:
        namespace.write(chart.NAMESPACE_MANIFEST)
        namespace.flush()
        kubectl(kubeconfig, "apply", "-f", namespace.name)
    _adopt(kubeconfig)
    try:
        chart.helm("--kubeconfig", str(kubeconfig), "upgrade", "--install", chart.RELEASE, str(chart.CHART),
                   "--namespace", chart.NAMESPACE, "--values", str(chart.LOCAL_VALUES), "--wait",
                   "--timeout", f"{int(timeout)}s", timeout=timeout + 30)
    except RuntimeError as error:
        raise InstallError(str(error)) from error


def _adopt(kubeconfig: Path) -> None:
    """Objects an earlier `kubectl apply` of the bundle made become the release's (Helm refuses to
    take over objects it does not own). An operator Deployment with another selector (immutable) is
    replaced instead: with one replica and `Recreate` that is what an upgrade does anyway."""
    rendered = chart.CHART / "files" / "crds"
    objects: list[tuple[str, str, str | None]] = [
        ("customresourcedefinition", path.stem, None) for path in sorted(rendered.glob("*.yaml"))]
    objects += [(kind, chart.RELEASE, None) for kind in ("clusterrole", "clusterrolebinding")]
    objects += [(kind, chart.RELEASE, chart.NAMESPACE) for kind in ("serviceaccount", "configmap", "deployment")]
    for kind, name, namespace in objects:
        where: list[str] = ["--namespace", namespace] if namespace else []
        found = kubectl(kubeconfig, "get", kind, name, *where, "--ignore-not-found", "-o", "json").strip()
        if not found:
            continue
        existing = json.loads(found)
        if kind == "deployment" and existing["spec"]["selector"].get("matchLabels") != chart.OPERATOR_SELECTOR:
            kubectl(kubeconfig, "delete", kind, name, *where, "--wait=true", timeout=180)
            continue
        if (existing["metadata"].get("annotations") or {}).get("meta.helm.sh/release-name") == chart.RELEASE:
            continue  # the release's already
        kubectl(kubeconfig, "annotate", "--overwrite", kind, name, *where,
                f"meta.helm.sh/release-name={chart.RELEASE}", f"meta.helm.sh/release-namespace={chart.NAMESPACE}")
        kubectl(kubeconfig, "label", "--overwrite", kind, name, *where, "app.kubernetes.io/managed-by=Helm")


def install_gateway(kubeconfig: Path, timeout: float = 180) -> None:
    """The Gateway API CRDs (from `make tools`) and Traefik with its Gateway; idempotent. Returns
    once Traefik runs and has accepted the Gateway."""
    crds = tools.gateway_api_crds()
    kubectl(kubeconfig, "apply", "--server-side", "-f", str(crds))
    kubectl(kubeconfig, "wait", "--for", "condition=Established", "--timeout", f"{int(timeout)}s",
            "-f", str(crds), timeout=timeout + 10)
    kubectl(kubeconfig, "apply", "-f", str(GATEWAY_MANIFEST))
    kubectl(kubeconfig, "-n", GATEWAY_NAMESPACE, "rollout", "status", f"deployment/{GATEWAY_SERVICE}",
            "--timeout", f"{int(timeout)}s", timeout=timeout + 10)
    kubectl(kubeconfig, "-n", GATEWAY_NAMESPACE, "wait", "--for", "condition=Programmed",
            "--timeout", f"{int(timeout)}s", f"gateway/{GATEWAY_NAME}", timeout=timeout + 10)
