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
    """A failed e2e test carries the operator's recent log lines (every replica, every restart), so
    a wait that timed out on the operator says what the operator was doing. The node runtime keeps
    container logs on this machine (as `ganforge local logs` reads them), not behind a kubelet API."""
    report = yield
    funcargs = getattr(item, "funcargs", {})
    cluster, kubeconfig = funcargs.get("local_cluster"), funcargs.get("operator")
    if report.failed and call.when == "call" and cluster is not None and isinstance(kubeconfig, Path):
        try:
            report.sections.append(("operator logs", _operator_logs(kubeconfig, cluster.workdir)))
        except Exception as error:  # the cluster itself may be what failed
            report.sections.append(("operator logs", f"(could not read them: {error})"))
    return report


def _operator_logs(kubeconfig: Path, workdir: Path, tail: int = 200) -> str:
    selector = ",".join(f"{key}={value}" for key, value in chart.OPERATOR_SELECTOR.items())
    uids = kubectl(kubeconfig, "-n", chart.NAMESPACE, "get", "pods", "-l", selector, "-o",
                   "jsonpath={.items[*].metadata.uid}", timeout=30).split()
    out = []
    for uid in uids:
        for log in sorted(workdir.glob(f"nodes/*/pods/{uid}/logs/*/*.log")):
            lines = log.read_text(errors="replace").splitlines()[-tail:]
            out.append(f"--- {log.relative_to(workdir)}\n" + "\n".join(lines))
    return "\n".join(out) or f"(no log files for operator pods {uids})"
