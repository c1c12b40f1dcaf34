"""Failures of the workload count; the infrastructure's disruptions do not (docs/operator.md,
"Failure semantics"), on `ganforge local` with real trainer gangs.

A rank SIGKILLed on a node that is still there (a segfault or a kill by someone) is a failure: its
peer then exits 7 or is stopped, and the pair counts once. After `backoffLimit` such failures the
job fails. So does a worker the kernel OOM-kills for going over its memory limit (the local
runtime enforces limits with memory cgroups and reports `OOMKilled`, as kubelet does). The spot
reclaim, counted once as a preemption, is tests/e2e/test_operator.py's."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiClient

from ganforge.local.install import InstallError, kubectl
from ganforge.operator import naming
from tests.e2e.cluster import apply, kill_container, status_of
from tests.helpers import OPERATOR_TAKEOVER_SECONDS, eventually, fast_job

JOB = "crashes"


def _running_pod(core: client.CoreV1Api, namespace: str, gang: int, rank: int,
                 workdir: Path) -> client.V1Pod | None:
    """The rank's pod once its trainer process has started."""
    name = naming.worker_pod(JOB, gang, rank)
    pods = core.list_namespaced_pod(namespace, field_selector=f"metadata.name={name}").items
    if not pods or pods[0].status.phase != "Running":
        return None
    started = list(workdir.glob(f"nodes/*/pods/{pods[0].metadata.uid}/containers/{naming.TRAINER_CONTAINER}"
                                "/*/started.json"))
    return pods[0] if started else None


@pytest.mark.timeout(900)
def test_a_rank_killed_on_a_live_node_counts_once_with_its_peer_and_fails_the_job_after_backoff_limit(
        operator: Path, local_cluster: Any, local_api: ApiClient, local_core: client.CoreV1Api,
        local_namespace: str, tmp_path: Path) -> None:
    namespace = local_namespace
    # Long enough that the kills land mid-training.
    apply(operator, namespace, fast_job(JOB, training={"totalKimg": 50}, backoffLimit=1), tmp_path)

    for gang in (0, 1):
        pod = eventually(lambda gang=gang: _running_pod(local_core, namespace, gang, 1, local_cluster.workdir), 240,
                         f"rank 1 of gang {gang} to run")
        kill_container(local_cluster.workdir, pod, naming.TRAINER_CONTAINER)
        if gang == 0:
            status = eventually(lambda: (s := status_of(local_api, namespace, "gantrainingjobs", JOB))
                                .get("launchedGang") == 1 and s, 240, "the second gang")
            assert (status["failures"], status["preemptions"]) == (1, 0), status
            assert status["lastFailure"]["reason"] == "KilledBySignal" and status["lastFailure"]["rank"] == 1
            assert status["lastFailure"]["exitCode"] == 137 and not status["lastFailure"]["disruption"]

    status = eventually(lambda: (s := status_of(local_api, namespace, "gantrainingjobs", JOB))
                        .get("phase") == "Failed" and s, 240, "the job to fail")
    # Two kills, two failures: the peers' exits (7, or stopped) were not counted on top.
    assert (status["failures"], status["preemptions"], status["gang"]) == (2, 0, 1), status
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "KilledBySignal" and "backoffLimit 1 exceeded" in failed["message"], failed

    # Deleting the failed job keeps its checkpoint claim, the only copy of what it trained.
    claim = naming.checkpoint_claim(JOB)
    kubectl(operator, "-n", namespace, "delete", "gtj", JOB, "--wait=true", timeout=180)
    kept = local_core.read_namespaced_persistent_volume_claim(claim, namespace)
    assert kept.metadata.deletion_timestamp is None and not kept.metadata.owner_references


@pytest.mark.timeout(600)
def test_workers_over_their_memory_limit_are_oom_killed_and_count_against_backoff_limit(
        operator: Path, local_api: ApiClient, local_namespace: str, tmp_path: Path) -> None:
    namespace, name = local_namespace, "outgrows"
    # Importing torch alone takes more than this: every worker is OOM-killed as it starts.
    apply(operator, namespace, fast_job(name, resources={"memory": "256Mi"}, backoffLimit=1), tmp_path)
    status = eventually(lambda: (s := status_of(local_api, namespace, "gantrainingjobs", name))
                        .get("phase") == "Failed" and s, 300, "the job to fail")
    # Two gangs, each a pair of OOM kills counted once; never taken for a disruption.
    assert (status["failures"], status["preemptions"]) == (2, 0), status
    assert status["lastFailure"]["reason"] == "OOMKilled" and status["lastFailure"]["exitCode"] == 137
    failed = _condition(status, "Failed")
    assert failed["reason"] == "OOMKilled" and "backoffLimit 1 exceeded" in failed["message"], failed
    kubectl(operator, "-n", namespace, "delete", "gtj", name, "--wait=true", timeout=180)


@pytest.mark.timeout(600)
def test_a_job_that_does_not_retain_its_checkpoints_takes_its_claim_with_it(
        operator: Path, local_core: client.CoreV1Api, local_namespace: str, tmp_path: Path) -> None:
    namespace, name = local_namespace, "disposable"
    apply(operator, namespace, fast_job(name, checkpoint={"retain": False}), tmp_path)
    claim = naming.checkpoint_claim(name)

    def claims() -> set[str]:
        return {c.metadata.name for c in local_core.list_namespaced_persistent_volume_claim(namespace).items
                if c.metadata.deletion_timestamp is None}

    eventually(lambda: claim in claims(), 120, "the job's checkpoint claim")
    kubectl(operator, "-n", namespace, "delete", "gtj", name, "--wait=true", timeout=180)
    eventually(lambda: claim not in claims(), 60, "the claim to go with the job")


@pytest.mark.timeout(900)
def test_a_suspended_job_stops_its_gang_and_resumes_from_its_checkpoint(
        operator: Path, local_api: ApiClient, local_core: client.CoreV1Api, local_namespace: str,
        tmp_path: Path) -> None:
    namespace, name = local_namespace, "pausable"
    # Long enough not to finish before the suspension lands (3.2 kimg once did, in 13 s); the
    # resume shortens it to a little past the checkpoint it resumes from.
    apply(operator, namespace, fast_job(name, training={"totalKimg": 50}), tmp_path)

    def status() -> dict[str, Any]:
        return status_of(local_api, namespace, "gantrainingjobs", name)

    eventually(lambda: (status().get("checkpoint") or {}).get("kimg"), 300, "a first checkpoint")

    # An edit of what the trainer reads is accepted, and the status says it waits for the next
    # gang; an edit of the trajectory is refused at apply, naming the field.
    kubectl(operator, "-n", namespace, "patch", "gtj", name, "--type=merge", "-p",
            '{"spec": {"checkpoint": {"intervalKimg": 0.64}, "evaluation": {"metrics": []}}}')
    generation = int(kubectl(operator, "-n", namespace, "get", "gtj", name, "-o", "jsonpath={.metadata.generation}"))
    waiting = eventually(lambda: (s := status()).get("observedGeneration") == generation
                         and _condition(s, "SpecApplied").get("reason") == "AtNextGang" and s, 60,
                         "SpecApplied to say the edit waits for the next gang")
    assert waiting["phase"] == "Running", waiting
    with pytest.raises(InstallError, match="batchSize"):
        kubectl(operator, "-n", namespace, "patch", "gtj", name, "--type=merge", "-p",
                '{"spec": {"training": {"batchSize": 32}}}')

    kubectl(operator, "-n", namespace, "patch", "gtj", name, "--type=merge", "-p", '{"spec": {"suspend": true}}')
    # Bounded by an operator takeover too: a replica that follows a lost one waits out the kopf
    # peering lifetime (60 s) before it acts, and earlier tests in this cluster lose nodes.
    eventually(lambda: status().get("phase") == "Suspended", OPERATOR_TAKEOVER_SECONDS, "Suspended")

    def running_pods() -> list[client.V1Pod]:
        pods = local_core.list_namespaced_pod(namespace, label_selector=f"ganforge.io/job={name}").items
        return [p for p in pods if p.status.phase in ("Pending", "Running")]

    eventually(lambda: not running_pods(), 120, "the gang to stop")
    suspended_at = status()
    total = suspended_at["checkpoint"]["kimg"] + 0.64
    kubectl(operator, "-n", namespace, "patch", "gtj", name, "--type=merge", "-p",
            json.dumps({"spec": {"suspend": False, "training": {"totalKimg": total}}}))
    done = eventually(lambda: (s := status()).get("phase") in ("Succeeded", "Failed") and s, 600, "the job to finish")
    assert done["phase"] == "Succeeded", done
    # Resumed, not restarted from zero, and counted neither as a failure nor as a preemption.
    assert done["progress"]["resumedFromKimg"] >= suspended_at["checkpoint"]["kimg"] > 0, done["progress"]
    assert (done["failures"], done["preemptions"]) == (0, 0) and done["gang"] == 1
    # The gang after the resume started from the edited spec.
    assert _condition(done, "SpecApplied")["reason"] == "GangUpToDate", done["conditions"]


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


@pytest.mark.timeout(600)
def test_a_job_whose_pods_are_on_a_lost_node_is_still_deleted(
        operator: Path, local_cluster: Any, local_core: client.CoreV1Api, local_namespace: str,
        tmp_path: Path) -> None:
    """The node dies with the gang on it and its Node object stays NotReady: kubelet will never
    confirm the pods stopped. The finalizer waits out the fencing bound (lostPodTimeoutSeconds,
    60 s: the node not Ready and the pod Terminating that long), then force-deletes them."""
    namespace, name, node = local_namespace, "stranded", "spot-1"
    apply(operator, namespace, fast_job(name, training={"totalKimg": 50}, resources={"spot": True}), tmp_path)

    def gang_running() -> bool:
        pods = local_core.list_namespaced_pod(namespace, label_selector=naming.job_selector(name)).items
        return len(pods) == 2 and all(p.status.phase == "Running" and p.spec.node_name == node for p in pods)

    def node_ready() -> bool:
        conditions = local_core.read_node(node).status.conditions or []
        return any(c.type == "Ready" and c.status == "True" for c in conditions)

    eventually(gang_running, 240, f"the gang running on {node}")
    local_cluster.lose_node(node)
    try:
        eventually(lambda: not node_ready(), 90, f"{node} NotReady")
        deleted = time.monotonic()
        kubectl(operator, "-n", namespace, "delete", "gtj", name, "--wait=false")

        def job_gone() -> bool:
            return name not in kubectl(operator, "-n", namespace, "get", "gtj", "-o", "name")

        eventually(job_gone, 240, "the job's deletion to complete")
        took = time.monotonic() - deleted
        print(f"\njob with its gang on a lost node deleted in {took:.1f} s")
        assert took >= 55, "pods on a node that may still be running were force-deleted before the fencing bound"
        assert not local_core.list_namespaced_pod(namespace, label_selector=naming.job_selector(name)).items
    finally:
        local_cluster.rejoin_node(node)
        eventually(node_ready, 120, f"{node} Ready again")
