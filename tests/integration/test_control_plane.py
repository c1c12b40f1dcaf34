"""The control plane is real: CRD schemas and CEL, controllers, garbage collection, RBAC, /version."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from ganforge.local import tools
from ganforge.local.control_plane import ControlPlane
from ganforge.local.processes import processes_with_marker
from tests.helpers import eventually

WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.ganforge.io
spec:
  group: example.ganforge.io
  scope: Namespaced
  names: {kind: Widget, plural: widgets, singular: widget}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [replicas, maxReplicas]
              properties:
                replicas: {type: integer, minimum: 0}
                maxReplicas: {type: integer, minimum: 1}
              x-kubernetes-validations:
                - rule: "self.replicas <= self.maxReplicas"
                  message: "spec.replicas must not exceed spec.maxReplicas"
"""


def widget(namespace: str, name: str, replicas: int, max_replicas: int) -> str:
    return json.dumps(
        {
            "apiVersion": "example.ganforge.io/v1",
            "kind": "Widget",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": replicas, "maxReplicas": max_replicas},
        }
    )


def test_crd_structural_schema_and_cel_rule_enforced(kubectl, namespace: str) -> None:
    kubectl.run("apply", "-f", "-", stdin=WIDGET_CRD)
    kubectl.run("wait", "--for=condition=Established", "--timeout=60s", "crd/widgets.example.ganforge.io")

    rejected = kubectl.run("apply", "-f", "-", stdin=widget(namespace, "too-many", 5, 2), check=False)
    assert rejected.returncode != 0
    assert "spec.replicas must not exceed spec.maxReplicas" in rejected.stderr

    below_minimum = kubectl.run("apply", "-f", "-", stdin=widget(namespace, "negative", -1, 2), check=False)
    assert below_minimum.returncode != 0
    assert "spec.replicas" in below_minimum.stderr

    kubectl.run("apply", "-f", "-", stdin=widget(namespace, "fine", 1, 2))
    stored = json.loads(kubectl.run("get", "widget", "fine", "-n", namespace, "-o", "json").stdout)
    assert stored["spec"] == {"replicas": 1, "maxReplicas": 2}


def deployment(name: str, replicas: int) -> client.V1Deployment:
    labels = {"app": name}
    container = client.V1Container(name="main", image="ganforge/none:test", command=["sleep", "3600"])
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[container]),
            ),
        ),
    )


def test_deployment_controllers_and_garbage_collection(kube_api: ApiClient, namespace: str) -> None:
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    apps.create_namespaced_deployment(namespace, deployment("web", 2))

    replica_sets = eventually(
        lambda: apps.list_namespaced_replica_set(namespace).items, what="the Deployment's ReplicaSet"
    )
    assert replica_sets[0].metadata.owner_references[0].name == "web"
    pods = eventually(
        lambda: (items := core.list_namespaced_pod(namespace).items) and len(items) == 2 and items,
        what="two Pods from the ReplicaSet",
    )
    # No node has joined this control plane, so the scheduler can only leave them Pending.
    assert {pod.status.phase for pod in pods} == {"Pending"}
    assert all(pod.metadata.owner_references[0].kind == "ReplicaSet" for pod in pods)

    apps.delete_namespaced_deployment("web", namespace, propagation_policy="Background")
    eventually(
        lambda: not apps.list_namespaced_replica_set(namespace).items
        and not core.list_namespaced_pod(namespace).items,
        what="the garbage collector to delete the ReplicaSet and its Pods",
    )


def test_garbage_collector_follows_owner_references(kube_api: ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    reference = client.V1OwnerReference(api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="dependent", owner_references=[reference])),
    )
    core.delete_namespaced_config_map("owner", namespace)
    eventually(
        lambda: all(cm.metadata.name != "dependent" for cm in core.list_namespaced_config_map(namespace).items),
        what="the dependent ConfigMap to be garbage-collected",
    )


def service_account_client(control_plane: ControlPlane, kube_api: ApiClient, namespace: str, name: str) -> ApiClient:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_service_account(namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name)))
    token = core.create_namespaced_service_account_token(
        name,
        namespace,
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)),
    ).status.token
    configuration = client.Configuration()
    configuration.host = control_plane.server_url
    configuration.ssl_ca_cert = str(control_plane.pki_dir / "ca.crt")
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return ApiClient(configuration)


def test_service_account_needs_a_role_binding(control_plane: ControlPlane, kube_api: ApiClient, namespace: str) -> None:
    as_reader = client.CoreV1Api(service_account_client(control_plane, kube_api, namespace, "reader"))

    with pytest.raises(ApiException) as denied:
        as_reader.list_namespaced_config_map(namespace)
    assert denied.value.status == 403
    assert f"system:serviceaccount:{namespace}:reader" in denied.value.body

    rbac = client.RbacAuthorizationV1Api(kube_api)
    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="configmap-reader"),
            rules=[client.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["get", "list"])],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="reader"),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="configmap-reader"),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=namespace)],
        ),
    )

    def allowed() -> bool:
        try:
            as_reader.list_namespaced_config_map(namespace)
        except ApiException as error:
            assert error.status == 403
            return False
        return True

    eventually(allowed, timeout=30, what="the RoleBinding to take effect")
    # The binding grants reading config maps only; writing them stays forbidden.
    with pytest.raises(ApiException) as still_denied:
        as_reader.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="x")))
    assert still_denied.value.status == 403


def test_version_reports_the_pinned_release(kube_api: ApiClient, kubectl) -> None:
    pinned = tools.versions().kubernetes
    assert client.VersionApi(kube_api).get_code().git_version == pinned
    reported = json.loads(kubectl.run("version", "-o", "json").stdout)
    assert reported["serverVersion"]["gitVersion"] == pinned
    assert reported["clientVersion"]["gitVersion"] == pinned


CHILD_OWNER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from ganforge.local.control_plane import ControlPlane
    plane = ControlPlane(Path(sys.argv[1]))
    plane.start()
    print(plane.cluster_id, flush=True)
    time.sleep(3600)
    """
)


def test_killing_the_owner_leaves_no_process_behind(tmp_path) -> None:
    # SIGKILL gives the owner no chance to clean up: the kernel's parent-death signal must.
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    owner = subprocess.Popen(
        [sys.executable, "-c", CHILD_OWNER, str(tmp_path / "cluster")],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert owner.stdout is not None
        cluster_id = owner.stdout.readline().strip()
        assert cluster_id, "the child control plane did not start"
        assert len(processes_with_marker(cluster_id)) >= 4
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        eventually(lambda: not processes_with_marker(cluster_id), timeout=20,
                   what="the orphaned control-plane processes to die")
    finally:
        if owner.poll() is None:
            owner.kill()
