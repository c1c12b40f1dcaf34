"""Names and labels of everything the operator creates for a GANTrainingJob.

Every child name is a pure function of the job name, the gang index and the rank. That is what
makes reconciling idempotent: an operator killed half-way through creating a gang recreates the
same names, the apiserver answers AlreadyExists, and no duplicate pod can ever appear.
"""

from __future__ import annotations

from ganforge.api.storage import PVC_MOUNT_ROOT, job_checkpoint_claim

LABEL_PREFIX = "ganforge.io"
JOB_LABEL = f"{LABEL_PREFIX}/job"
GANG_LABEL = f"{LABEL_PREFIX}/gang"
RANK_LABEL = f"{LABEL_PREFIX}/rank"
MANAGED_BY = {"app.kubernetes.io/managed-by": "ganforge-operator"}
FINALIZER = f"{LABEL_PREFIX}/finalizer"
# On worker pods: what their gang was started with (trainer configuration and pod template).
CONFIG_HASH_ANNOTATION = f"{LABEL_PREFIX}/config-sha256"
# Kueue's plain-pod integration: a job labelled with a queue has its gangs admitted as pod groups.
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_POD_GROUP_LABEL = "kueue.x-k8s.io/pod-group-name"
KUEUE_POD_GROUP_COUNT_ANNOTATION = "kueue.x-k8s.io/pod-group-total-count"

SERVICE_LABEL = f"{LABEL_PREFIX}/inference-service"
REVISION_LABEL = f"{LABEL_PREFIX}/revision"
EXPORT_LABEL = f"{LABEL_PREFIX}/export"
ANALYSIS_LABEL = f"{LABEL_PREFIX}/analysis"

TRAINER_CONTAINER = "trainer"
EXPORT_CONTAINER = "export"
PREPARE_CONTAINER = "prepare-model"
TRITON_CONTAINER = "triton"
ANALYSIS_CONTAINER = "analysis"
CONFIG_FILE_NAME = "job.yaml"
CONFIG_MOUNT = "/etc/ganforge"
PVC_ROOT = PVC_MOUNT_ROOT
CACHE_MOUNT = "/var/cache/ganforge"  # where settings.trainerCacheClaim is mounted
RENDEZVOUS_PORT = 29500
METRICS_PORT = 9100


def worker_pod(job: str, gang: int, rank: int) -> str:
    return f"{job}-g{gang}-w{rank}"


def worker_hostname(job: str, rank: int) -> str:
    # Stable across gangs: MASTER_ADDR stays the same name, and gangs never overlap in time.
    return f"{job}-w{rank}"


def rendezvous_service(job: str) -> str:
    return job


def config_map(job: str) -> str:
    return f"{job}-config"


def checkpoint_claim(job: str) -> str:
    return job_checkpoint_claim(job)


def trainer_account(job: str) -> str:
    return f"{job}-trainer"


def export_pod(job: str, attempt: int) -> str:
    return f"{job}-export-{attempt}"


def revision_object(service: str, revision: str) -> str:
    """Deployment and Service of one revision of a GANInferenceService."""
    return f"{service}-{revision}"


def analysis_pod(service: str, revision: str, step: int, attempt: int) -> str:
    """At most 40 + 1 + 11 + 8 characters: step and attempt stay below 100 (the API's limits)."""
    return f"{service}-{revision}-a{step}-{attempt}"


def service_selector(service: str) -> str:
    return f"{SERVICE_LABEL}={service}"


def job_selector(job: str) -> str:
    return f"{JOB_LABEL}={job}"


def pod_group(job: str, gang: int) -> str:
    return f"{job}-g{gang}"
