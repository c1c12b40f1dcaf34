"""Pure builders: a job (and the gang index) -> the manifests of its child objects.

Nothing here talks to the apiserver; the reconciler decides *when* to create these and the
handlers send them. Everything a job owns carries a controller owner reference, so deleting the
job garbage-collects the lot.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, ClassVar

import yaml

from ganforge.api import trainer_env, trajectory
from ganforge.api.storage import ClaimLocation, default_checkpoint_uri, parse_pvc_uri
from ganforge.api.training_job import API_VERSION, KIND, GANTrainingJobSpec
from ganforge.operator import naming
from ganforge.operator.pod_security import restricted
from ganforge.operator.settings import OperatorSettings

GPU_RESOURCE = "nvidia.com/gpu"
LOCAL_RUN_ROOT = "/var/run/ganforge"


@dataclass(frozen=True)
class OwnerRef:
    """The identity of an object the operator acts for, enough to own and name its children."""

    API_VERSION: ClassVar[str]
    KIND: ClassVar[str]
    LABEL: ClassVar[str]  # carried by every child, valued with the owner's name

    name: str
    namespace: str
    uid: str

    def owner_reference(self) -> dict[str, Any]:
        return {"apiVersion": self.API_VERSION, "kind": self.KIND, "name": self.name, "uid": self.uid,
                "controller": True, "blockOwnerDeletion": True}

    def metadata(self, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
        return {"name": name, "namespace": self.namespace,
                "labels": {**naming.MANAGED_BY, self.LABEL: self.name, **(labels or {})},
                "ownerReferences": [self.owner_reference()]}


@dataclass(frozen=True)
class JobRef(OwnerRef):
    API_VERSION = API_VERSION
    KIND = KIND
    LABEL = naming.JOB_LABEL

    queue: str | None = None  # the job's Kueue queue-name label, passed on to its worker pods


def claim_location(uri: str) -> ClaimLocation | None:
    """The claim a pvc:// URI names; None for every other kind of URI (the API validated it)."""
    return parse_pvc_uri(uri) if uri.startswith("pvc://") else None


def resolved_checkpoint_uri(job: JobRef, spec: GANTrainingJobSpec) -> str:
    """Without spec.checkpoint.uri the job gets a claim of its own; every rank mounts it."""
    return spec.checkpoint.uri or default_checkpoint_uri(job.name)


def run_dir(job: JobRef, spec: GANTrainingJobSpec) -> str:
    """Outputs (samples, metrics, progress) live beside the checkpoints when those are on a claim,
    so they survive a gang restart; remote checkpoint URIs keep outputs in the pod."""
    location = claim_location(resolved_checkpoint_uri(job, spec))
    if location is None:
        return f"{LOCAL_RUN_ROOT}/run"
    return "/".join(part for part in (naming.PVC_ROOT, location.claim, location.path, "run") if part)


def resolved_job_document(job: JobRef, spec: GANTrainingJobSpec) -> dict[str, Any]:
    wire = spec.to_wire()
    wire["checkpoint"]["uri"] = resolved_checkpoint_uri(job, spec)
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": job.name, "namespace": job.namespace},
            "spec": wire}


def config_map(job: JobRef, spec: GANTrainingJobSpec) -> dict[str, Any]:
    text = yaml.safe_dump(resolved_job_document(job, spec), sort_keys=True)
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": job.metadata(naming.config_map(job.name)),
            "data": {naming.CONFIG_FILE_NAME: text}}


def gang_fingerprint(job: JobRef, spec: GANTrainingJobSpec, settings: OperatorSettings) -> str:
    """What a gang is started with: the trainer's configuration and the worker pod template. Pods
    of a running gang that carry another value were started from an earlier spec (or settings)."""
    template = worker_pod(job, spec, settings, gang=0, rank=0, config_sha="")["spec"]
    trainer_spec = trajectory.trainer_view(resolved_job_document(job, spec)["spec"])
    text = json.dumps({"spec": trainer_spec, "pod": template}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def rendezvous_service(job: JobRef) -> dict[str, Any]:
    # Headless and publishing not-ready addresses: rank 0's DNS name must resolve before the
    # trainer is "ready", because rendezvous is what it waits for.
    return {"apiVersion": "v1", "kind": "Service", "metadata": job.metadata(naming.rendezvous_service(job.name)),
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                     "selector": {naming.JOB_LABEL: job.name},
                     "ports": [{"name": "rendezvous", "port": naming.RENDEZVOUS_PORT,
                                "targetPort": naming.RENDEZVOUS_PORT}]}}


def gang_network_policy(job: JobRef) -> dict[str, Any]:
    """Only the job's own pods reach its pods, on any port: the rendezvous port and the ports the
    collectives (gloo, NCCL) pick at random; the trainer's metrics port stays open to scrapers."""
    pods = {"matchLabels": {naming.JOB_LABEL: job.name}}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": job.metadata(naming.rendezvous_service(job.name)),
            "spec": {"podSelector": pods, "policyTypes": ["Ingress"],
                     "ingress": [{"from": [{"podSelector": pods}]},
                                 {"ports": [{"port": naming.METRICS_PORT, "protocol": "TCP"}]}]}}


def checkpoint_claim(job: JobRef, settings: OperatorSettings) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": list(settings.checkpoint_access_modes),
                            "resources": {"requests": {"storage": settings.checkpoint_volume_size}}}
    if settings.checkpoint_storage_class:
        spec["storageClassName"] = settings.checkpoint_storage_class
    # No owner: the garbage collector would delete the only copy of the trained model with the job.
    # The finalizer deletes it when spec.checkpoint.retain is false.
    metadata = job.metadata(naming.checkpoint_claim(job.name))
    del metadata["ownerReferences"]
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata, "spec": spec}


def trainer_rbac(job: JobRef) -> list[dict[str, Any]]:
    """The trainer may report progress on its own job's status, and nothing else."""
    name = naming.trainer_account(job.name)
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": job.metadata(name)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": job.metadata(name),
         "rules": [{"apiGroups": ["ganforge.io"], "resources": ["gantrainingjobs/status"],
                    "resourceNames": [job.name], "verbs": ["get", "patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": job.metadata(name),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": job.namespace}]},
    ]


def claim_volumes(*uris: str, read_only: tuple[str, ...] = ()) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumeMounts, volumes) that mount every claim these URIs name, once each, at its
    place under the pvc:// mount root; read-only where the claim is named only by `read_only` URIs."""
    writable = [location.claim for location in map(claim_location, uris) if location is not None]
    readable = [location.claim for location in map(claim_location, read_only) if location is not None]
    claims = list(dict.fromkeys([*writable, *readable]))  # once each, in order
    mounts = [{"name": f"claim-{i}", "mountPath": f"{naming.PVC_ROOT}/{c}",
               **({} if c in writable else {"readOnly": True})} for i, c in enumerate(claims)]
    volumes = [{"name": f"claim-{i}", "persistentVolumeClaim": {"claimName": c}} for i, c in enumerate(claims)]
    return mounts, volumes


def _placement(spec: GANTrainingJobSpec, settings: OperatorSettings) -> dict[str, Any]:
    if spec.resources.spot:
        return {"nodeSelector": dict(settings.spot_node_selector),
                "tolerations": [toleration.to_wire() for toleration in settings.spot_tolerations]}
    return {"nodeSelector": dict(settings.on_demand_node_selector)} if settings.on_demand_node_selector else {}


def _resources(spec: GANTrainingJobSpec) -> dict[str, Any]:
    requests: dict[str, str] = {"cpu": spec.resources.cpu, "memory": spec.resources.memory}
    # Memory is a limit too: a worker that outgrows it is OOM-killed, a failure counted against
    # backoffLimit, instead of pressing its node until the kubelet evicts whatever it picks.
    limits: dict[str, str] = {"memory": spec.resources.memory}
    if spec.resources.gpus_per_worker:
        # Extended resources are whole devices: Kubernetes requires request == limit.
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(spec.resources.gpus_per_worker)
    return {"requests": requests, "limits": limits}


def _environment(job: JobRef, spec: GANTrainingJobSpec, settings: OperatorSettings, gang: int,
                 rank: int) -> list[dict[str, Any]]:
    run = run_dir(job, spec)
    cache = f"{run}/cache" if settings.trainer_cache_claim is None else naming.CACHE_MOUNT
    master = f"{naming.worker_hostname(job.name, 0)}.{naming.rendezvous_service(job.name)}"
    processes = spec.resources.processes
    port = str(naming.RENDEZVOUS_PORT)
    # torchrun's contract. One process per pod: the pod is the rank. Several (one per GPU): the
    # pod's `ganforge train` starts them, numbering ranks pod by pod from the PET_ variables.
    ranks = ({"RANK": str(rank), "WORLD_SIZE": str(spec.resources.workers), "LOCAL_RANK": "0",
              "LOCAL_WORLD_SIZE": "1"} if processes == 1 else {})
    values = {
        **ranks,
        trainer_env.NPROC_PER_NODE: str(processes), trainer_env.NNODES: str(spec.resources.workers),
        trainer_env.NODE_RANK: str(rank), trainer_env.MASTER_ADDR: master, trainer_env.MASTER_PORT: port,
        "GROUP_RANK": str(rank), "MASTER_ADDR": master, "MASTER_PORT": port,
        trainer_env.JOB_NAME: job.name, trainer_env.JOB_NAMESPACE: job.namespace, trainer_env.JOB_UID: job.uid,
        trainer_env.GANG: str(gang),
        trainer_env.RUN_DIR: run, trainer_env.PVC_ROOT: naming.PVC_ROOT, trainer_env.CACHE_DIR: cache,
        trainer_env.GRACE_SECONDS: f"{settings.trainer_grace_seconds:g}",
        trainer_env.DEVICE: "cuda" if spec.resources.gpus_per_worker else "cpu",
        trainer_env.METRICS_PORT: str(naming.METRICS_PORT),
        **settings.trainer_env,
    }
    return [{"name": key, "value": value} for key, value in values.items()]


# /dev/shm of a pod whose ranks share GPUs over NCCL (NCCL's own advice for containers: 1 GiB).
NCCL_SHM_SIZE = "1Gi"


def worker_pod(job: JobRef, spec: GANTrainingJobSpec, settings: OperatorSettings, gang: int, rank: int,
               config_sha: str) -> dict[str, Any]:
    claim_mounts, claim_sources = claim_volumes(spec.dataset.uri, resolved_checkpoint_uri(job, spec))
    mounts: list[dict[str, Any]] = [{"name": "config", "mountPath": naming.CONFIG_MOUNT, "readOnly": True},
                                    *claim_mounts]
    volumes: list[dict[str, Any]] = [{"name": "config", "configMap": {"name": naming.config_map(job.name)}},
                                     *claim_sources]
    if claim_location(resolved_checkpoint_uri(job, spec)) is None:
        # Checkpoints go to a remote URI; outputs stay in the pod (never on the node's own disk).
        mounts.append({"name": "run", "mountPath": LOCAL_RUN_ROOT})
        volumes.append({"name": "run", "emptyDir": {}})
    if spec.resources.gpus_per_worker > 1:
        # NCCL moves data between a pod's GPUs through /dev/shm, which container runtimes cap at
        # 64 MiB. Memory-backed: what it uses counts against the pod's memory limit.
        mounts.append({"name": "shm", "mountPath": "/dev/shm"})
        volumes.append({"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": NCCL_SHM_SIZE}})
    if settings.trainer_cache_claim is not None:
        mounts.append({"name": "cache", "mountPath": naming.CACHE_MOUNT})
        volumes.append({"name": "cache", "persistentVolumeClaim": {"claimName": settings.trainer_cache_claim}})
    labels = {naming.GANG_LABEL: str(gang), naming.RANK_LABEL: str(rank)}
    annotations = {naming.CONFIG_HASH_ANNOTATION: config_sha}
    if job.queue is not None:
        # Kueue admits the gang as one pod group, all of its workers or none.
        labels |= {naming.KUEUE_QUEUE_LABEL: job.queue, naming.KUEUE_POD_GROUP_LABEL: naming.pod_group(job.name, gang)}
        annotations[naming.KUEUE_POD_GROUP_COUNT_ANNOTATION] = str(spec.resources.workers)
    metadata = job.metadata(naming.worker_pod(job.name, gang, rank), labels)
    metadata["annotations"] = annotations
    container = {
        "name": naming.TRAINER_CONTAINER, "image": settings.trainer_image,
        "command": ["ganforge", "train"], "args": ["--config", f"{naming.CONFIG_MOUNT}/{naming.CONFIG_FILE_NAME}"],
        "env": _environment(job, spec, settings, gang, rank), "resources": _resources(spec),
        "ports": [{"name": "rendezvous", "containerPort": naming.RENDEZVOUS_PORT},
                  {"name": "metrics", "containerPort": naming.METRICS_PORT}],
        "volumeMounts": mounts,
        # The operator copies these last log lines into the job's status when a worker fails.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    grace = int(settings.trainer_grace_seconds) + settings.termination_grace_padding_seconds
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": restricted({"restartPolicy": "Never", "hostname": naming.worker_hostname(job.name, rank),
                                "subdomain": naming.rendezvous_service(job.name),
                                "serviceAccountName": naming.trainer_account(job.name),
                                "terminationGracePeriodSeconds": grace, "containers": [container],
                                "volumes": volumes, **_placement(spec, settings)},
                               api_token=rank == 0)}  # rank 0 reports the job's status
