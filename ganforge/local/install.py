"""Install ganforge (CRDs, RBAC, the operator Deployment) into a cluster with the real kubectl,
the same way a user would: `kubectl apply -f manifests/crds -f manifests/install`."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ganforge.local import tools

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
EXAMPLE_JOB = MANIFESTS / "examples" / "fashion-mnist-dcgan.yaml"
EXAMPLE_SERVICE = MANIFESTS / "examples" / "fashion-mnist-gis.yaml"
OPERATOR_NAMESPACE = "ganforge-system"
OPERATOR_DEPLOYMENT = "ganforge-operator"
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


def install(kubeconfig: Path, manifests: Path = MANIFESTS, timeout: float = 180) -> None:
    """Idempotent; returns once the CRDs are Established and the operator is available."""
    crds = manifests / "crds"
    kubectl(kubeconfig, "apply", "-f", str(crds))
    # A custom resource (the peering object) can only be applied once its CRD is served.
    kubectl(kubeconfig, "wait", "--for", "condition=Established", "--timeout", f"{int(timeout)}s",
            "-f", str(crds), timeout=timeout + 10)
    kubectl(kubeconfig, "apply", "-f", str(manifests / "install"))
    kubectl(kubeconfig, "-n", OPERATOR_NAMESPACE, "rollout", "status", f"deployment/{OPERATOR_DEPLOYMENT}",
            "--timeout", f"{int(timeout)}s", timeout=timeout + 10)


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
