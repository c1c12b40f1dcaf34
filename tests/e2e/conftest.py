from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ganforge.local.install import GATEWAY_NAMESPACE, GATEWAY_SERVICE, install, install_gateway, kubectl


@pytest.fixture(scope="module")
def operator(local_cluster: Any) -> Iterator[Path]:
    """The CRDs and the operator installed on `ganforge local`; yields the admin kubeconfig."""
    install(local_cluster.kubeconfig)
    yield local_cluster.kubeconfig


@pytest.fixture(scope="module")
def gateway(operator: Path) -> str:
    """The Gateway API CRDs and Traefik's Gateway `ganforge-gateway/ganforge` on `ganforge local`;
    yields Traefik's Service IP (HTTP on port 80, its Prometheus metrics on 9000)."""
    install_gateway(operator)
    return kubectl(operator, "-n", GATEWAY_NAMESPACE, "get", "service", GATEWAY_SERVICE,
                   "-o", "jsonpath={.spec.clusterIP}").strip()
