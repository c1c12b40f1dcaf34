"""The chart's life on `ganforge local`, as a platform team lives it: the operator that every e2e
module uses is this chart's release (`helm upgrade --install`, restricted namespace, the chart's
ServiceAccount and RBAC); `helm test` proves the API is served; `helm upgrade` with a CRD field
added upgrades the CRD; `helm uninstall` keeps the CRDs and the jobs; installing again adopts them."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ganforge.local import chart, tools
from ganforge.local.install import OPERATOR_DEPLOYMENT, OPERATOR_NAMESPACE, install, kubectl
from ganforge.operator.naming import job_selector
from tests.conftest import RESTRICTED
from tests.e2e.cluster import apply
from tests.helpers import eventually, fast_job

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


def _can(kubeconfig: Path, verb: str, resource: str, *where: str) -> bool:
    """`kubectl auth can-i` as the operator's ServiceAccount."""
    result = subprocess.run([str(tools.tool_path("kubectl")), "--kubeconfig", str(kubeconfig), "auth", "can-i",
                             verb, resource, *where, "--as",
                             f"system:serviceaccount:{OPERATOR_NAMESPACE}:{chart.RELEASE}"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.stdout.strip() in ("yes", "no"), result.stderr  # exit 1 means "no", not an error
    return result.stdout.strip() == "yes"


@pytest.mark.timeout(900)
def test_watching_listed_namespaces_uses_roles_there_and_leaves_other_namespaces_alone(
        operator: Path, local_namespace: str, tmp_path: Path) -> None:
    kubeconfig, watched = operator, local_namespace
    unwatched = f"{watched}-unwatched"
    kubectl(kubeconfig, "create", "namespace", unwatched)
    kubectl(kubeconfig, "label", "namespace", unwatched, *(f"{k}={v}" for k, v in RESTRICTED.items()))
    try:
        _helm(kubeconfig, "upgrade", chart.RELEASE, str(chart.CHART), "--values", str(chart.LOCAL_VALUES),
              "--set-json", f'watchNamespaces=["{watched}"]', "--wait", "--timeout", "300s")
        args = json.loads(kubectl(kubeconfig, "-n", OPERATOR_NAMESPACE, "get", "deployment", OPERATOR_DEPLOYMENT,
                                  "-o", "json"))["spec"]["template"]["spec"]["containers"][0]["args"]
        assert f"--namespace={watched}" in args, args

        # Rights on namespaced objects only where it watches; cluster-wide only reads of nodes and CRDs.
        assert _can(kubeconfig, "create", "pods", "-n", watched)
        assert _can(kubeconfig, "patch", "gantrainingjobs.ganforge.io/status", "-n", watched)
        assert not _can(kubeconfig, "create", "pods", "-n", unwatched)
        assert not _can(kubeconfig, "list", "gantrainingjobs.ganforge.io", "-n", unwatched)
        assert not _can(kubeconfig, "list", "pods", "--all-namespaces")
        assert not _can(kubeconfig, "list", "namespaces")
        assert _can(kubeconfig, "list", "nodes") and _can(kubeconfig, "watch", "nodes")
        assert not _can(kubeconfig, "delete", "nodes")

        apply(kubeconfig, unwatched, fast_job("not-mine"), tmp_path)
        apply(kubeconfig, watched, fast_job("mine"), tmp_path)
        eventually(lambda: kubectl(kubeconfig, "-n", watched, "get", "pods", "-l", job_selector("mine"),
                                   "-o", "name").strip(), 180, "the watched namespace's job to get its pods")
        # By now the operator had every chance to see the other job too: it must not have touched it.
        other = json.loads(kubectl(kubeconfig, "-n", unwatched, "get", "gtj", "not-mine", "-o", "json"))
        assert not other.get("status") and not other["metadata"].get("finalizers"), other
        assert not kubectl(kubeconfig, "-n", unwatched, "get", "pods", "-o", "name").strip()
        kubectl(kubeconfig, "-n", watched, "delete", "gtj", "mine", "--wait=true", timeout=180)
    finally:
        kubectl(kubeconfig, "delete", "namespace", unwatched, "--wait=true", timeout=180)
        install(kubeconfig)  # every namespace again, for the modules after this one


@pytest.mark.timeout(900)
def test_the_kubectl_bundle_brings_up_a_working_operator_where_ganforge_was_never_installed(
        operator: Path, local_namespace: str, tmp_path: Path) -> None:
    kubeconfig = operator
    # Nothing of ganforge left: no release, no CRDs (no jobs are left in other namespaces), no namespace.
    _helm(kubeconfig, "uninstall", chart.RELEASE, "--wait", "--timeout", "300s")
    try:
        crds = sorted(path.stem for path in (chart.CHART / "files" / "crds").glob("*.yaml"))
        kubectl(kubeconfig, "delete", "crd", *crds, "--wait=true", timeout=180)
        kubectl(kubeconfig, "delete", "namespace", OPERATOR_NAMESPACE, "--wait=true", timeout=300)

        applied = kubectl(kubeconfig, "apply", "-f", str(chart.INSTALL_BUNDLE))  # one shot, as documented
        assert f"deployment.apps/{OPERATOR_DEPLOYMENT} created" in applied, applied
        kubectl(kubeconfig, "-n", OPERATOR_NAMESPACE, "rollout", "status", f"deployment/{OPERATOR_DEPLOYMENT}",
                "--timeout", "240s", timeout=250)

        apply(kubeconfig, local_namespace, fast_job("from-the-bundle"), tmp_path)
        finished = eventually(
            lambda: (s := json.loads(kubectl(kubeconfig, "-n", local_namespace, "get", "gtj", "from-the-bundle",
                                             "-o", "json")).get("status", {})).get("phase") in ("Succeeded", "Failed")
            and s, 600, "the job to finish under the bundle's operator")
        assert finished["phase"] == "Succeeded", finished
        peering = kubectl(kubeconfig, "get", "clusterkopfpeering", "ganforge", "-o", "name")
        assert peering.strip() == "clusterkopfpeering.kopf.dev/ganforge"  # the operator made it
        kubectl(kubeconfig, "-n", local_namespace, "delete", "gtj", "from-the-bundle", "--wait=true", timeout=180)
    finally:
        install(kubeconfig)  # the release adopts what the bundle made; later modules find their operator
