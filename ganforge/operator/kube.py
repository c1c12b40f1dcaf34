"""The operator's only contact with the apiserver: read jobs, services and their children, carry out a Plan.

Synchronous (the kubernetes client is), called from kopf's asyncio handlers through a thread.
Every write is idempotent: AlreadyExists on create and NotFound on delete count as done.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from urllib3.util.retry import Retry

from ganforge.api.inference_service import GATEWAY_API_GROUP, GATEWAY_API_VERSION, HTTPROUTE_PLURAL
from ganforge.api.inference_service import PLURAL as SERVICE_PLURAL
from ganforge.api.training_job import API_GROUP, PLURAL, VERSION
from ganforge.operator import naming
from ganforge.operator.reconcile import Event, Plan

log = logging.getLogger("ganforge.operator")

# Test-only failpoint: exit abruptly after this many successful writes, to prove that an operator
# killed mid-reconcile recovers without duplicates (tests/e2e/test_operator.py).
CRASH_AFTER_WRITES_ENV = "GANFORGE_OPERATOR_CRASH_AFTER_WRITES"
# Writes of one pass that go out at once (a launch creates about ten objects).
FAN_OUT_THREADS = 16


def transport_retries() -> Retry:
    """Retries for requests that never got an answer, for every verb.

    urllib3 retries only idempotent verbs by default, so a create or patch sent on a pooled
    connection the apiserver had just closed fails with "Remote end closed connection without
    response". Every write here is idempotent by design (AlreadyExists and NotFound count as done,
    status writes carry a resourceVersion), so sending it again is safe. Answers with a status
    code are never retried here: the reconcile pass decides on those."""
    return Retry(total=4, connect=4, read=3, status=0, other=0, allowed_methods=None,
                 backoff_factor=0.2, raise_on_status=False, raise_on_redirect=False)


def api_client(configuration: client.Configuration, pool_size: int) -> ApiClient:
    """The client the operator talks through: a connection for every request that may be in
    flight at once, and a failed connection retried rather than failing the reconcile pass."""
    configuration.connection_pool_maxsize = pool_size
    configuration.retries = transport_retries()
    return client.ApiClient(configuration)

class Kube:
    def __init__(self, api: ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.apps = client.AppsV1Api(api)
        rbac = client.RbacAuthorizationV1Api(api)
        networking = client.NetworkingV1Api(api)
        core = self.core
        # kind -> (create, update); the typed client methods accept plain manifest dicts. ConfigMaps
        # are replaced whole; Services and Deployments get a strategic merge patch, which keeps
        # what the apiserver owns (a Service's clusterIP) and what others add (annotations).
        merge = "application/strategic-merge-patch+json"
        self._methods: dict[str, tuple[Callable[..., Any], Callable[..., Any] | None]] = {
            "Pod": (core.create_namespaced_pod, None),
            "Service": (core.create_namespaced_service,
                        functools.partial(core.patch_namespaced_service, _content_type=merge)),
            "Deployment": (self.apps.create_namespaced_deployment,
                           functools.partial(self.apps.patch_namespaced_deployment, _content_type=merge)),
            "ConfigMap": (core.create_namespaced_config_map, core.replace_namespaced_config_map),
            "PersistentVolumeClaim": (core.create_namespaced_persistent_volume_claim, None),
            "ServiceAccount": (core.create_namespaced_service_account, None),
            "Role": (rbac.create_namespaced_role, None),
            # A job's spec.rollout creates its service, or points an existing one at the job.
            "GANInferenceService": (
                functools.partial(self._custom_create, SERVICE_PLURAL),
                functools.partial(self._custom_merge_patch, SERVICE_PLURAL)),
            "RoleBinding": (rbac.create_namespaced_role_binding, None),
            "NetworkPolicy": (networking.create_namespaced_network_policy, None),
            # A service's traffic split: a JSON merge patch replaces backendRefs whole.
            "HTTPRoute": (self._route_create, self._route_merge_patch),
        }
        self._deleters: dict[str, Callable[..., Any]] = {
            "Deployment": self.apps.delete_namespaced_deployment, "Service": core.delete_namespaced_service,
            "PersistentVolumeClaim": core.delete_namespaced_persistent_volume_claim}
        self._writes_left = int(os.environ.get(CRASH_AFTER_WRITES_ENV, "0") or 0)
        self._writes_lock = threading.Lock()
        self._fan_out = ThreadPoolExecutor(FAN_OUT_THREADS, thread_name_prefix="kube-write")

    def _custom_create(self, plural: str, namespace: str, body: dict[str, Any]) -> Any:
        return self.custom.create_namespaced_custom_object(API_GROUP, VERSION, namespace, plural, body)

    def _custom_merge_patch(self, plural: str, name: str, namespace: str, body: dict[str, Any]) -> Any:
        return self.custom.patch_namespaced_custom_object(API_GROUP, VERSION, namespace, plural, name, body,
                                                          _content_type="application/merge-patch+json")

    def _route_create(self, namespace: str, body: dict[str, Any]) -> Any:
        return self.custom.create_namespaced_custom_object(GATEWAY_API_GROUP, GATEWAY_API_VERSION, namespace,
                                                           HTTPROUTE_PLURAL, body)

    def _route_merge_patch(self, name: str, namespace: str, body: dict[str, Any]) -> Any:
        return self.custom.patch_namespaced_custom_object(GATEWAY_API_GROUP, GATEWAY_API_VERSION, namespace,
                                                          HTTPROUTE_PLURAL, name, body,
                                                          _content_type="application/merge-patch+json")

    # -- reads ---------------------------------------------------------------------------------
    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            body: dict[str, Any] = self.custom.get_namespaced_custom_object(API_GROUP, VERSION, namespace, PLURAL, name)
            return body
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def get_inference_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            body: dict[str, Any] = self.custom.get_namespaced_custom_object(API_GROUP, VERSION, namespace,
                                                                            SERVICE_PLURAL, name)
            return body
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def get_http_route(self, namespace: str, name: str) -> dict[str, Any] | None:
        """None when the route does not exist; an apiserver without the Gateway API answers 404 too,
        and the route's creation then fails with an error that names the missing resource."""
        try:
            body: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GATEWAY_API_GROUP, GATEWAY_API_VERSION, namespace, HTTPROUTE_PLURAL, name)
            return body
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def job_pods(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return self.pods(namespace, naming.job_selector(name))

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        pods = self.core.list_namespaced_pod(namespace, label_selector=selector)
        return [self.api.sanitize_for_serialization(pod) for pod in pods.items]

    def deployments(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        found = self.apps.list_namespaced_deployment(namespace, label_selector=selector)
        return [self.api.sanitize_for_serialization(item) for item in found.items]

    def get_node(self, name: str) -> dict[str, Any] | None:
        """One node by name; None when it does not exist. The nodes the operator knows come from its
        watch; this read only confirms one the watch has not shown yet, before a pod on it is
        judged to be on a lost node."""
        try:
            node = self.core.read_node(name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        found: dict[str, Any] = self.api.sanitize_for_serialization(node)
        return found

    # -- writes --------------------------------------------------------------------------------
    def ensure_peering(self, name: str, namespaces: list[str]) -> None:
        """kopf's peering object (ClusterKopfPeering, or a KopfPeering in each watched namespace),
        created if missing: a one-shot `kubectl apply` of the bundle cannot hold it, since its CRD
        must be served before it can be created."""
        wanted = [("ClusterKopfPeering", None)] if not namespaces else [("KopfPeering", n) for n in namespaces]
        for kind, namespace in wanted:
            peering = {"apiVersion": "kopf.dev/v1", "kind": kind,
                       "metadata": {"name": name, "labels": dict(naming.MANAGED_BY)}}
            try:
                if namespace is None:
                    self.custom.create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", peering)
                else:
                    self.custom.create_namespaced_custom_object("kopf.dev", "v1", namespace, "kopfpeerings", peering)
            except ApiException as error:
                if error.status != 409:
                    raise
    def _wrote(self) -> None:
        with self._writes_lock:
            if not self._writes_left:
                return
            self._writes_left -= 1
            if not self._writes_left:
                log.error("failpoint %s reached: exiting abruptly", CRASH_AFTER_WRITES_ENV)
                os._exit(137)

    def _together(self, writes: list[Callable[[], Any]]) -> None:
        """Run independent writes at once; the first error is raised once all have ended."""
        if len(writes) <= 1:
            for write in writes:
                write()
            return
        for outcome in [self._fan_out.submit(write) for write in writes]:
            outcome.result()

    def create(self, manifest: dict[str, Any]) -> bool:
        """True if created, False if it already existed."""
        create, _ = self._methods[manifest["kind"]]
        try:
            create(manifest["metadata"]["namespace"], manifest)
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        self._wrote()
        return True

    def apply(self, manifest: dict[str, Any]) -> None:
        if self.create(manifest):
            return
        _, update = self._methods[manifest["kind"]]
        assert update is not None, f"{manifest['kind']} is create-only"
        # No resourceVersion: an unconditional update, which is what "make it look like this" means.
        update(manifest["metadata"]["name"], manifest["metadata"]["namespace"], manifest)
        self._wrote()

    def delete_object(self, namespace: str, kind: str, name: str) -> None:
        try:
            self._deleters[kind](name, namespace)
        except ApiException as error:
            if error.status != 404:
                raise
        self._wrote()

    def delete_pod(self, namespace: str, name: str, force: bool) -> None:
        try:
            self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0 if force else None)
        except ApiException as error:
            if error.status != 404:
                raise
        self._wrote()

    def patch_status(self, namespace: str, name: str, resource_version: str, status: dict[str, Any],
                     plural: str = PLURAL) -> None:
        """Merge patch with a resourceVersion precondition: a decision made on stale state is
        refused with 409 instead of being applied twice."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": status}
        self.custom.patch_namespaced_custom_object_status(API_GROUP, VERSION, namespace, plural, name, body,
                                                          _content_type="application/merge-patch+json")
        self._wrote()

    def execute(self, namespace: str, name: str, resource_version: str, plan: Plan,
                emit: Callable[[Event], None], plural: str = PLURAL) -> None:
        """Writes first, then the status transition, then deletions: a launch is recorded only
        once its pods exist, and pods are deleted only once the reason is recorded. Independent
        writes go out together; then, one at a time, RoleBindings (the apiserver checks the binder
        holds its Role's rights, so the Role must exist) and pods (a pod needs its ServiceAccount,
        config and claims; one at a time, so an operator killed mid-launch leaves a prefix of the
        gang, which the next pass completes)."""
        def last(manifest: dict[str, Any]) -> bool:
            return manifest["kind"] in ("RoleBinding", "Pod")

        self._together([functools.partial(self.apply, manifest) for manifest in plan.apply]
                       + [functools.partial(self.create, manifest) for manifest in plan.create if not last(manifest)])
        for kind in ("RoleBinding", "Pod"):
            for manifest in plan.create:
                if manifest["kind"] == kind:
                    self.create(manifest)
        if plan.status is not None:
            self.patch_status(namespace, name, resource_version, plan.status, plural)
        for pod in plan.delete:
            self.delete_pod(namespace, pod.name, pod.force)
        for obj in plan.delete_objects:
            self.delete_object(namespace, obj.kind, obj.name)
        for event in plan.events:
            emit(event)
