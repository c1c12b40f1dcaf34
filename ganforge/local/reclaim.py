"""The API side of a spot reclaim drill: taint, evict through the Eviction API, delete the Node.

Evictions go through the Eviction API so pods get the `DisruptionTarget` condition that real
reclaims produce and that ganforge's operator uses to tell a preemption from a failure.
"""

from __future__ import annotations

import logging
import time

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

# Like GKE's `cloud.google.com/impending-node-termination`: no new pods while the node goes away.
RECLAIM_TAINT_KEY = "node.ganforge.io/impending-termination"


def taint_for_reclaim(core: client.CoreV1Api, node_name: str) -> None:
    node = core.read_node(node_name)
    taints = list(node.spec.taints or [])
    if not any(t.key == RECLAIM_TAINT_KEY for t in taints):
        taints.append(client.V1Taint(key=RECLAIM_TAINT_KEY, value="true", effect="NoSchedule"))
        serialized = [core.api_client.sanitize_for_serialization(taint) for taint in taints]
        core.patch_node(node_name, {"spec": {"taints": serialized}})


def pods_on(core: client.CoreV1Api, node_name: str) -> list[client.V1Pod]:
    return list(core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node_name}").items)


def evict_node_pods(core: client.CoreV1Api, node_name: str, grace_seconds: int) -> None:
    for pod in pods_on(core, node_name):
        if pod.metadata.deletion_timestamp or pod.status.phase in ("Succeeded", "Failed"):
            continue
        eviction = client.V1Eviction(
            metadata=client.V1ObjectMeta(name=pod.metadata.name, namespace=pod.metadata.namespace),
            delete_options=client.V1DeleteOptions(grace_period_seconds=grace_seconds),
        )
        try:
            core.create_namespaced_pod_eviction(pod.metadata.name, pod.metadata.namespace, eviction)
            log.info("evicted %s/%s (grace %ss)", pod.metadata.namespace, pod.metadata.name, grace_seconds)
        except ApiException as error:
            if error.status == 404:
                continue
            if error.status != 429:
                raise
            # A reclaim does not wait for PodDisruptionBudgets: the machine goes away regardless.
            log.warning("eviction of %s/%s blocked by a disruption budget; deleting it",
                        pod.metadata.namespace, pod.metadata.name)
            core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace,
                                       grace_period_seconds=grace_seconds)


def wait_until_drained(core: client.CoreV1Api, node_name: str, timeout: float) -> bool:
    """Wait for every evicted pod to be gone; the reclaim goes on regardless after `timeout`.

    A pod that reports a terminal phase while it is being deleted still waits for the agent's final
    delete; only pods that had finished before the eviction (never deleted by it) may stay."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        remaining = [p for p in pods_on(core, node_name)
                     if p.metadata.deletion_timestamp or p.status.phase not in ("Succeeded", "Failed")]
        if not remaining:
            return True
        time.sleep(0.5)
    return False


def delete_node(core: client.CoreV1Api, node_name: str) -> None:
    try:
        core.delete_node(node_name)
    except ApiException as error:
        if error.status != 404:
            raise
