from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from ganforge.local import chart
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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed e2e test carries the operator's recent logs (every replica, and the replica before a
    restart), so a wait that timed out on the operator says what the operator was doing."""
    report = yield
    kubeconfig = getattr(item, "funcargs", {}).get("operator")
    if report.failed and call.when == "call" and isinstance(kubeconfig, Path):
        selector = ",".join(f"{key}={value}" for key, value in chart.OPERATOR_SELECTOR.items())
        try:
            logs = kubectl(kubeconfig, "-n", chart.NAMESPACE, "logs", "--prefix", "--tail", "300", "--timestamps",
                           "-l", selector, "--all-containers", timeout=30)
        except Exception as error:  # the cluster itself may be what failed
            logs = f"(could not read the operator's logs: {error})"
        report.sections.append(("operator logs", logs))
    return report
