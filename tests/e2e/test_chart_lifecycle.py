"""The chart's life on `ganforge local`, as a platform team lives it: the operator that every e2e
module uses is this chart's release (`helm upgrade --install`, restricted namespace, the chart's
ServiceAccount and RBAC); `helm test` proves the API is served; `helm upgrade` with a CRD field
added upgrades the CRD; `helm uninstall` keeps the CRDs and the jobs; installing again adopts them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from ganforge.local import chart
from ganforge.local.install import OPERATOR_DEPLOYMENT, OPERATOR_NAMESPACE, install, kubectl
from tests.e2e.cluster import apply
from tests.helpers import fast_job

JOB_CRD = "gantrainingjobs.ganforge.io"


def _helm(kubeconfig: Path, *args: str) -> str:
    return chart.helm("--kubeconfig", str(kubeconfig), *args, "--namespace", chart.NAMESPACE, timeout=400)


def _crd(kubeconfig: Path) -> dict[str, Any]:
    return json.loads(kubectl(kubeconfig, "get", "crd", JOB_CRD, "-o", "json"))  # type: ignore[no-any-return]


def _with_a_new_job_field(tmp_path: Path) -> Path:
    """A copy of the chart whose GANTrainingJob CRD has one more spec field: the next version."""
    copy = tmp_path / "ganforge"
    shutil.copytree(chart.CHART, copy)
    path = copy / "files" / "crds" / f"{JOB_CRD}.yaml"
    crd = yaml.safe_load(path.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"]["upgradeProbe"] = {"type": "string", "description": "Added by the next chart version."}
    path.write_text(yaml.safe_dump(crd, sort_keys=False))
    return copy


@pytest.mark.timeout(900)
def test_install_test_upgrade_uninstall_keep_the_crds_and_the_jobs(operator: Path, local_namespace: str,
                                                                    tmp_path: Path) -> None:
    kubeconfig = operator
    deployment = json.loads(kubectl(kubeconfig, "-n", OPERATOR_NAMESPACE, "get", "deployment", OPERATOR_DEPLOYMENT,
                                    "-o", "json"))
    assert deployment["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == chart.RELEASE
    namespace = json.loads(kubectl(kubeconfig, "get", "namespace", OPERATOR_NAMESPACE, "-o", "json"))
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"

    tested = _helm(kubeconfig, "test", chart.RELEASE)
    assert "Phase:          Succeeded" in tested, tested
    said = kubectl(kubeconfig, "-n", OPERATOR_NAMESPACE, "get", "pod", f"{chart.RELEASE}-test-api", "-o",
                   "jsonpath={.status.containerStatuses[0].state.terminated.message}")
    assert "gantrainingjobs.ganforge.io/v1alpha1 is served" in said, said

    _helm(kubeconfig, "upgrade", chart.RELEASE, str(_with_a_new_job_field(tmp_path)), "--values",
          str(chart.LOCAL_VALUES), "--wait", "--timeout", "300s")
    spec = _crd(kubeconfig)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert "upgradeProbe" in spec["properties"], "helm upgrade did not upgrade the CRD"

    # A job the release does not own; it must outlive the release.
    apply(kubeconfig, local_namespace, fast_job("outlives-the-release"), tmp_path)
    _helm(kubeconfig, "uninstall", chart.RELEASE, "--wait", "--timeout", "300s")
    try:
        assert _crd(kubeconfig)["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        kubectl(kubeconfig, "-n", local_namespace, "get", "gtj", "outlives-the-release")
        assert not kubectl(kubeconfig, "-n", OPERATOR_NAMESPACE, "get", "deployment", "--ignore-not-found",
                           "-o", "name").strip()
    finally:
        install(kubeconfig)  # the kept CRDs are adopted again; later modules find their operator
    spec = _crd(kubeconfig)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert "upgradeProbe" not in spec["properties"]  # this version's CRD again
    kubectl(kubeconfig, "-n", local_namespace, "delete", "gtj", "outlives-the-release", "--wait=true",
            timeout=180)
