"""Pure builders for what the operator creates to export and serve a model.

- the export pod of a job (trainer image, `ganforge export`), which reads the job's checkpoint claim
  and writes a revision into the model repository claim;
- the model repository claim, which no job owns: deleting a job never takes a served model;
- per revision of a GANInferenceService, a Triton Deployment and Service `<gis>-<revision>`: an
  init step verifies the revision's sha256 and lays its model out for Triton, which then loads only
  that model, in explicit model-control mode, and is never asked to reload it;
- the stable Service `<gis>`, which selects the stable revision's pods.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ganforge.api import storage, trainer_env
from ganforge.api.inference_service import (
    API_VERSION as SERVICE_API_VERSION,
)
from ganforge.api.inference_service import (
    KIND as SERVICE_KIND,
)
from ganforge.api.inference_service import (
    TRITON_GRPC_PORT,
    TRITON_HTTP_PORT,
    TRITON_METRICS_PORT,
    GANInferenceServiceSpec,
    ModelVolumeSpec,
    RevisionStatus,
)
from ganforge.api.training_job import GANTrainingJobSpec
from ganforge.operator import naming
from ganforge.operator.children import JobRef, OwnerRef, claim_volumes, resolved_checkpoint_uri
from ganforge.operator.pod_security import restricted
from ganforge.operator.settings import OperatorSettings

MODELS_MOUNT = "/models"
TERMINATION_LOG = "/dev/termination-log"
# Triton's grace for in-flight requests at shutdown; the pod's grace adds the preStop delay and room.
TRITON_EXIT_TIMEOUT_SECONDS = 20
PRE_STOP_SECONDS = 5


def model_repository_claim(namespace: str, claim: str, settings: OperatorSettings) -> dict[str, Any]:
    """Deliberately without an owner: revisions outlive the jobs that exported them."""
    spec: dict[str, Any] = {"accessModes": list(settings.model_repository_access_modes),
                            "resources": {"requests": {"storage": settings.model_repository_volume_size}}}
    if settings.model_repository_storage_class:
        spec["storageClassName"] = settings.model_repository_storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": namespace, "labels": dict(naming.MANAGED_BY)}, "spec": spec}


def job_repository_uri(job: JobRef, spec: GANTrainingJobSpec) -> str:
    """Where this job's revisions go inside the model repository."""
    return f"{spec.export.model_repository.rstrip('/')}/{job.name}"


def export_pod(job: JobRef, spec: GANTrainingJobSpec, settings: OperatorSettings, checkpoint_uri: str,
               attempt: int) -> dict[str, Any]:
    # The export only reads the checkpoints: a defect in it cannot damage the only copy of the model.
    mounts, volumes = claim_volumes(spec.export.model_repository, read_only=(resolved_checkpoint_uri(job, spec),))
    env = {trainer_env.PVC_ROOT: storage.PVC_MOUNT_ROOT, trainer_env.JOB_NAMESPACE: job.namespace,
           trainer_env.JOB_NAME: job.name, trainer_env.JOB_UID: job.uid, "OMP_NUM_THREADS": "1"}
    container = {
        "name": naming.EXPORT_CONTAINER, "image": settings.trainer_image, "command": ["ganforge", "export"],
        "args": ["--checkpoint", checkpoint_uri, "--repository", job_repository_uri(job, spec),
                 "--opset", str(spec.export.onnx_opset), "--precision", spec.export.precision,
                 "--profile", settings.triton_profile, "--result-file", TERMINATION_LOG],
        "env": [{"name": key, "value": value} for key, value in env.items()],
        "resources": {"requests": {"cpu": settings.export_cpu, "memory": settings.export_memory}},
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    metadata = job.metadata(naming.export_pod(job.name, attempt), {naming.EXPORT_LABEL: job.name})
    placement = {"nodeSelector": dict(settings.on_demand_node_selector)} if settings.on_demand_node_selector else {}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": restricted({"restartPolicy": "Never", "containers": [container], "volumes": volumes, **placement})}


# -- serving --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceRef(OwnerRef):
    """A GANInferenceService, owner of its revisions' Deployments and Services."""

    API_VERSION = SERVICE_API_VERSION
    KIND = SERVICE_KIND
    LABEL = naming.SERVICE_LABEL


def revision_selector(service: ServiceRef, revision: str) -> dict[str, str]:
    return {naming.SERVICE_LABEL: service.name, naming.REVISION_LABEL: revision}


def _ports() -> list[dict[str, Any]]:
    return [{"name": "http", "port": TRITON_HTTP_PORT, "targetPort": "http"},
            {"name": "grpc", "port": TRITON_GRPC_PORT, "targetPort": "grpc"},
            {"name": "metrics", "port": TRITON_METRICS_PORT, "targetPort": "metrics"}]


def stable_service(service: ServiceRef, revision: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": service.metadata(service.name),
            "spec": {"selector": revision_selector(service, revision), "ports": _ports()}}


def revision_service(service: ServiceRef, revision: str) -> dict[str, Any]:
    name = naming.revision_object(service.name, revision)
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": service.metadata(name, {naming.REVISION_LABEL: revision}),
            "spec": {"selector": revision_selector(service, revision), "ports": _ports()}}


def _model_volume(volume: ModelVolumeSpec) -> dict[str, str]:
    empty_dir = {"medium": "Memory"} if volume.medium == "Memory" else {}
    return {**empty_dir, "sizeLimit": volume.size_limit} if volume.size_limit else empty_dir


def triton_deployment(service: ServiceRef, spec: GANInferenceServiceSpec, model_name: str, revision: str,
                      uri: str, sha256: str, settings: OperatorSettings) -> dict[str, Any]:
    location = storage.parse_pvc_uri(uri)
    labels = revision_selector(service, revision)
    ready_path = f"/v2/models/{model_name}/ready"
    triton = spec.triton
    prepare = {
        "name": naming.PREPARE_CONTAINER, "image": settings.trainer_image, "command": ["ganforge", "prepare-model"],
        "args": ["--revision", uri, "--sha256", sha256, "--model-name", model_name, "--repository", MODELS_MOUNT,
                 "--profile", settings.triton_profile, "--triton", json.dumps(triton.to_wire(), sort_keys=True),
                 "--result-file", TERMINATION_LOG],
        "volumeMounts": [{"name": "models", "mountPath": MODELS_MOUNT},
                         {"name": "repository", "mountPath": f"{storage.PVC_MOUNT_ROOT}/{location.claim}",
                          "readOnly": True}],
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    server = {
        "name": naming.TRITON_CONTAINER, "image": triton.image or settings.triton_image,
        "command": ["tritonserver"],
        "args": [f"--model-repository={MODELS_MOUNT}", "--model-control-mode=explicit", f"--load-model={model_name}",
                 f"--http-port={TRITON_HTTP_PORT}", f"--grpc-port={TRITON_GRPC_PORT}",
                 f"--metrics-port={TRITON_METRICS_PORT}", f"--exit-timeout-secs={TRITON_EXIT_TIMEOUT_SECONDS}",
                 *settings.triton_args],
        "ports": [{"name": "http", "containerPort": TRITON_HTTP_PORT},
                  {"name": "grpc", "containerPort": TRITON_GRPC_PORT},
                  {"name": "metrics", "containerPort": TRITON_METRICS_PORT}],
        "resources": {"requests": {"cpu": triton.cpu, "memory": triton.memory}},
        "volumeMounts": [{"name": "models", "mountPath": MODELS_MOUNT, "readOnly": True}],
        # The model's own readiness, not /v2/health/ready, which turns false while any model loads.
        "readinessProbe": {"httpGet": {"path": ready_path, "port": "http"}, "periodSeconds": 2,
                           "failureThreshold": 2},
        "startupProbe": {"httpGet": {"path": ready_path, "port": "http"}, "periodSeconds": 2,
                         "failureThreshold": 150},
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"}, "periodSeconds": 10,
                          "failureThreshold": 3},
        # Endpoints drop the pod before Triton stops taking requests; in-flight ones then finish.
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
    }
    pod_spec: dict[str, Any] = {
        "initContainers": [prepare], "containers": [server],
        "terminationGracePeriodSeconds": PRE_STOP_SECONDS + TRITON_EXIT_TIMEOUT_SECONDS + 10,
        "volumes": [{"name": "models", "emptyDir": _model_volume(triton.model_volume)},
                    {"name": "repository", "persistentVolumeClaim": {"claimName": location.claim, "readOnly": True}}],
    }
    if settings.on_demand_node_selector:
        pod_spec["nodeSelector"] = dict(settings.on_demand_node_selector)
    name = naming.revision_object(service.name, revision)
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": service.metadata(name, {naming.REVISION_LABEL: revision}),
        "spec": {
            "replicas": triton.replicas, "selector": {"matchLabels": labels},
            # A new pod must be ready before an old one goes: the revision never loses capacity.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "progressDeadlineSeconds": settings.revision_ready_timeout_seconds,
            "template": {"metadata": {"labels": {**naming.MANAGED_BY, **labels}}, "spec": restricted(pod_spec)},
        },
    }


def revision_host(service: ServiceRef, revision: str) -> str:
    return f"{naming.revision_object(service.name, revision)}.{service.namespace}.svc"


def analysis_pod(service: ServiceRef, spec: GANInferenceServiceSpec, model_name: str, revision: RevisionStatus,
                 stable: str, step: int, attempt: int, settings: OperatorSettings) -> dict[str, Any]:
    """`ganforge analyze` of the canary against the stable, through their revision Services. It
    reads the canary's artifact (its reference statistics) from the model repository, read-only,
    and reports through its termination message: no API token."""
    canary = revision.name
    location = storage.parse_pvc_uri(revision.uri)
    gates = spec.rollout.gates
    container = {
        "name": naming.ANALYSIS_CONTAINER, "image": settings.trainer_image, "command": ["ganforge", "analyze"],
        "args": ["--model-name", model_name,
                 "--canary-url", f"{revision_host(service, canary)}:{TRITON_HTTP_PORT}",
                 "--stable-url", f"{revision_host(service, stable)}:{TRITON_HTTP_PORT}",
                 "--canary-metrics-url", f"http://{revision_host(service, canary)}:{TRITON_METRICS_PORT}/metrics",
                 "--canary-revision", revision.uri, "--canary-sha256", revision.sha256,
                 "--quality", json.dumps(gates.quality.to_wire(), sort_keys=True),
                 "--serving", json.dumps(gates.serving.to_wire(), sort_keys=True),
                 # Fresh latents for a re-run; the same for both revisions within one analysis.
                 "--seed", str(1000 * step + attempt), "--threads", "1", "--result-file", TERMINATION_LOG],
        "env": [{"name": "OMP_NUM_THREADS", "value": "1"}],
        "resources": {"requests": {"cpu": settings.analysis_cpu, "memory": settings.analysis_memory}},
        "volumeMounts": [{"name": "repository", "mountPath": f"{storage.PVC_MOUNT_ROOT}/{location.claim}",
                          "readOnly": True}],
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    # No revision label: the revision Services select by it, and an analysis pod is no endpoint.
    labels = {naming.ANALYSIS_LABEL: canary}
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never", "containers": [container],
        "volumes": [{"name": "repository", "persistentVolumeClaim": {"claimName": location.claim, "readOnly": True}}],
    }
    if settings.on_demand_node_selector:
        pod_spec["nodeSelector"] = dict(settings.on_demand_node_selector)
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": service.metadata(naming.analysis_pod(service.name, canary, step, attempt), labels),
            "spec": restricted(pod_spec)}


def inference_service_for_job(job: JobRef, spec: GANTrainingJobSpec) -> dict[str, Any]:
    """The GANInferenceService a job's spec.rollout names, when it does not exist yet: it serves
    the job's exports under the job's rollout policy. No owner: the service outlives the job."""
    assert spec.rollout is not None
    # Unset optional fields are left out: the CRD's enums and numbers do not accept null.
    policy = spec.rollout.model_dump(by_alias=True, mode="json", exclude_none=True)
    policy.pop("service")
    return {"apiVersion": SERVICE_API_VERSION, "kind": SERVICE_KIND,
            "metadata": {"name": spec.rollout.service, "namespace": job.namespace, "labels": dict(naming.MANAGED_BY)},
            "spec": {"source": {"trainingJob": job.name}, "rollout": policy}}


def retarget_inference_service(job: JobRef, service: str) -> dict[str, Any]:
    """A merge patch that points an existing service at the job (its other settings stay)."""
    return {"apiVersion": SERVICE_API_VERSION, "kind": SERVICE_KIND,
            "metadata": {"name": service, "namespace": job.namespace},
            "spec": {"source": {"trainingJob": job.name, "artifact": None}}}
