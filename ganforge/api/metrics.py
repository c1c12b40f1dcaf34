"""Every Prometheus metric ganforge exposes or relies on, named once: the operator and the trainer
create their collectors from these definitions, and the alerts, the dashboards and their tests
check every query against them.

The operator's per-object series carry the object's own `namespace` label, as kube-state-metrics'
do: scrape the operator with honor_labels (the chart's ServiceMonitor does).

Names follow Prometheus conventions: base units (seconds, bytes, ratios), counters end in `_total`,
and labels are bounded (a phase, a cause, a verb; a job or service name only where one series per
object is the point, as kube-state-metrics does).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from typing import Any, Literal

MetricKind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True)
class Metric:
    name: str  # the family name as scraped; a counter's ends in _total
    kind: MetricKind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()  # histograms only

    @property
    def series(self) -> tuple[str, ...]:
        """The series names a scrape shows for this family."""
        if self.kind == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)

    @property
    def base_name(self) -> str:
        """The name to hand prometheus_client, which appends `_total` to counters itself."""
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name


# Durations from seconds to an hour: reconciles, scheduling, recovery after a reclaim.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
WAIT_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)
CHECKPOINT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120)

# Which ganforge runs where: `ganforge_build_info * on(pod) group_left(version) ...` joins it in.
BUILD_INFO = Metric("ganforge_build_info", "gauge", "Always 1; the labels say which ganforge build runs.",
                    ("component", "version"))

# -- operator ---------------------------------------------------------------------------------
OPERATOR_JOBS = Metric("ganforge_operator_jobs", "gauge", "GANTrainingJobs by phase.", ("phase",))
OPERATOR_JOB_OUTCOMES = Metric(
    "ganforge_operator_job_outcomes_total", "counter",
    "Jobs that ended (succeeded, failed) or whose exported revision was rolled back, as this operator "
    "wrote the transition.", ("outcome",))
OPERATOR_RESTARTS = Metric("ganforge_operator_restarts_total", "counter",
                           "Gangs restarted, by cause (preemption: a disruption; failure: counted against "
                           "backoffLimit).", ("cause",))
OPERATOR_JOB_STARTUP = Metric(
    "ganforge_operator_job_startup_seconds", "histogram",
    "From a job's creation to every worker of its first gang running.", buckets=WAIT_BUCKETS)
OPERATOR_GANG_PENDING = Metric(
    "ganforge_operator_gang_pending_seconds", "histogram",
    "From a gang's pods created to all of them running: scheduling, unschedulable time, image pulls.",
    buckets=WAIT_BUCKETS)
OPERATOR_RECOVERY = Metric(
    "ganforge_operator_recovery_seconds", "histogram",
    "From a disruption or failure observed (status.lastFailure.time) to every worker of the new gang "
    "running (the Running condition's lastTransitionTime).", ("cause",), WAIT_BUCKETS)
OPERATOR_RECONCILE_SECONDS = Metric(
    "ganforge_operator_reconcile_seconds", "histogram", "Time of one reconcile pass (observe, decide, act).",
    buckets=LATENCY_BUCKETS)
OPERATOR_RECONCILE_ERRORS = Metric(
    "ganforge_operator_reconcile_errors_total", "counter",
    "Reconcile passes that failed and were retried, by kind (http-<status>, or the exception's type).",
    ("kind",))
OPERATOR_API_REQUESTS = Metric(
    "ganforge_operator_api_requests_total", "counter",
    "Requests the operator sent the apiserver, by HTTP verb and status code (error: no answer).",
    ("verb", "code"))
OPERATOR_ROLLOUT_OUTCOMES = Metric(
    "ganforge_operator_rollout_outcomes_total", "counter",
    "Rollouts of a GANInferenceService that ended, by outcome (promoted, rolled_back).", ("outcome",))

# The operator's view of each job's status.metrics (what its trainer reported): unlike the
# trainer's own gauges, these outlive the trainer's pods, so a final evaluation is never missed.
JOB_EVALUATION = Metric("ganforge_job_evaluation", "gauge",
                        "The newest evaluation metrics of each GANTrainingJob (status.metrics).",
                        ("namespace", "job_name", "metric"))

# -- serving, as the operator sees each GANInferenceService ------------------------------------
SERVICE_LABELS = ("namespace", "service")
SERVING_CANARY_WEIGHT = Metric("ganforge_serving_canary_weight_ratio", "gauge",
                               "Share of traffic the canary revision gets (0-1).", SERVICE_LABELS)
SERVING_READY_REVISIONS = Metric("ganforge_serving_ready_revisions", "gauge",
                                 "Revisions of the service in state Ready (they can serve).", SERVICE_LABELS)
SERVING_GATE_VALUE = Metric("ganforge_serving_gate_value", "gauge",
                            "The latest canary analysis's measurement, by gate (e.g. deltaKid, p95LatencyMs).",
                            (*SERVICE_LABELS, "gate"))
SERVING_GATE_PASSING = Metric("ganforge_serving_gate_passing", "gauge",
                              "1 when the latest canary analysis's gate passed, 0 when it failed or was "
                              "inconclusive.", (*SERVICE_LABELS, "gate"))

# -- trainer (rank 0 serves them; `job_name` is the GANTrainingJob) ---------------------------
TRAINER_LABELS = ("job_name",)  # not `job`: Prometheus sets that to the scrape job
TRAINER_KIMG = Metric("ganforge_trainer_kimg", "gauge", "Thousands of real images seen.", TRAINER_LABELS)
TRAINER_STEP = Metric("ganforge_trainer_step", "gauge", "Generator updates.", TRAINER_LABELS)
TRAINER_STEP_SECONDS = Metric("ganforge_trainer_step_seconds", "gauge",
                              "Mean wall time per step since the last report.", TRAINER_LABELS)
TRAINER_STEP_PHASE_SECONDS = Metric(
    "ganforge_trainer_step_phase_seconds", "gauge",
    "Mean time per step since the last report in each phase: data (batch assembly), compute (forward, "
    "backward, optimiser), communication (gradient all-reduce).", (*TRAINER_LABELS, "phase"))
TRAINER_IMAGES_PER_SECOND = Metric("ganforge_trainer_images_per_second", "gauge",
                                   "Training throughput, all ranks.", TRAINER_LABELS)
TRAINER_LOSS = Metric("ganforge_trainer_loss", "gauge", "Mean loss since the last report.",
                      (*TRAINER_LABELS, "network"))
TRAINER_GRAD_NORM = Metric("ganforge_trainer_grad_norm", "gauge", "Mean global gradient L2 norm.",
                           (*TRAINER_LABELS, "network"))
TRAINER_D_OUTPUT = Metric("ganforge_trainer_d_output_mean", "gauge", "Mean D output on real and fake images.",
                          (*TRAINER_LABELS, "input"))
TRAINER_CHECKPOINT_SECONDS = Metric(
    "ganforge_trainer_checkpoint_seconds", "histogram",
    "Checkpoint time by phase (stall: training paused; write: the whole write).", (*TRAINER_LABELS, "phase"),
    CHECKPOINT_BUCKETS)
TRAINER_CHECKPOINT_FAILURES = Metric("ganforge_trainer_checkpoint_failures_total", "counter",
                                     "Checkpoint writes that failed.", TRAINER_LABELS)
TRAINER_LAST_CHECKPOINT_KIMG = Metric("ganforge_trainer_last_checkpoint_kimg", "gauge",
                                      "Progress in the newest checkpoint.", TRAINER_LABELS)
TRAINER_LAST_CHECKPOINT_TIMESTAMP = Metric(
    "ganforge_trainer_last_checkpoint_timestamp_seconds", "gauge",
    "Unix time the newest checkpoint was written, or this gang resumed from it if later: since then the "
    "gang's work is in no checkpoint (time() minus this).", TRAINER_LABELS)
TRAINER_CHECKPOINT_INTERVAL = Metric("ganforge_trainer_checkpoint_interval_kimg", "gauge",
                                     "spec.checkpoint.intervalKimg: how often a checkpoint is due.", TRAINER_LABELS)
TRAINER_EVALUATION = Metric("ganforge_trainer_evaluation", "gauge", "Newest evaluation metric (e.g. fd_domain).",
                            (*TRAINER_LABELS, "metric"))
TRAINER_LAST_EVALUATION_KIMG = Metric("ganforge_trainer_last_evaluation_kimg", "gauge",
                                      "Progress at the newest evaluation.", TRAINER_LABELS)
TRAINER_DEVICE_SECONDS = Metric(
    "ganforge_trainer_device_seconds_total", "counter",
    "Device time the gang used while training: devices (all ranks) x wall seconds, by device type (cuda: GPU "
    "seconds, the cost).", (*TRAINER_LABELS, "device"))
TRAINER_GPU_MEMORY = Metric("ganforge_trainer_gpu_memory_bytes", "gauge",
                            "CUDA memory of this rank's device: allocated, reserved, and the peak allocated.",
                            (*TRAINER_LABELS, "kind"))
TRAINER_GPU_UTILIZATION = Metric("ganforge_trainer_gpu_utilization_ratio", "gauge",
                                 "Share of time a kernel ran on this rank's device over the last sample (0-1).",
                                 TRAINER_LABELS)

OPERATOR_METRICS = (BUILD_INFO, OPERATOR_JOBS, OPERATOR_JOB_OUTCOMES, OPERATOR_RESTARTS, OPERATOR_JOB_STARTUP,
                    OPERATOR_GANG_PENDING, OPERATOR_RECOVERY, OPERATOR_RECONCILE_SECONDS, OPERATOR_RECONCILE_ERRORS,
                    OPERATOR_API_REQUESTS, OPERATOR_ROLLOUT_OUTCOMES, JOB_EVALUATION, SERVING_CANARY_WEIGHT,
                    SERVING_READY_REVISIONS, SERVING_GATE_VALUE, SERVING_GATE_PASSING)
TRAINER_METRICS = (BUILD_INFO, TRAINER_KIMG, TRAINER_STEP, TRAINER_STEP_SECONDS, TRAINER_STEP_PHASE_SECONDS,
                   TRAINER_IMAGES_PER_SECOND, TRAINER_LOSS, TRAINER_GRAD_NORM, TRAINER_D_OUTPUT,
                   TRAINER_CHECKPOINT_SECONDS, TRAINER_CHECKPOINT_FAILURES, TRAINER_LAST_CHECKPOINT_KIMG,
                   TRAINER_LAST_CHECKPOINT_TIMESTAMP, TRAINER_CHECKPOINT_INTERVAL, TRAINER_EVALUATION,
                   TRAINER_LAST_EVALUATION_KIMG,
                   TRAINER_DEVICE_SECONDS, TRAINER_GPU_MEMORY, TRAINER_GPU_UTILIZATION)
# Exposed only on CUDA: a CPU run (tests, `ganforge local`) never has them.
CUDA_ONLY = (TRAINER_GPU_MEMORY, TRAINER_GPU_UTILIZATION)

# -- what other components expose, that alerts and dashboards read ------------------------------
# Triton's per-model counters (label `model`, `version`), scraped from every revision's pods.
TRITON_REQUEST_SUCCESS = Metric("nv_inference_request_success", "counter",
                                "Triton: successful inference requests.", ("model", "version"))
TRITON_REQUEST_FAILURE = Metric("nv_inference_request_failure", "counter",
                                "Triton: failed inference requests.", ("model", "version"))
TRITON_REQUEST_DURATION = Metric("nv_inference_request_duration_us", "counter",
                                 "Triton: cumulative end-to-end request time, microseconds.", ("model", "version"))
TRITON_QUEUE_DURATION = Metric("nv_inference_queue_duration_us", "counter",
                               "Triton: cumulative time requests waited in the queue, microseconds.",
                               ("model", "version"))
# The Gateway API implementation's per-backend request metrics (Traefik: `service` names the
# backend, e.g. <namespace>-<gis>-<revision>-8000@kubernetesgateway).
GATEWAY_REQUESTS = Metric("traefik_service_requests_total", "counter",
                          "Gateway: requests per backend Service, by code.", ("service", "code", "method"))
GATEWAY_REQUEST_DURATION = Metric("traefik_service_request_duration_seconds", "histogram",
                                  "Gateway: request duration per backend Service.", ("service", "code", "method"))
EXTERNAL_METRICS = (TRITON_REQUEST_SUCCESS, TRITON_REQUEST_FAILURE, TRITON_REQUEST_DURATION, TRITON_QUEUE_DURATION,
                    GATEWAY_REQUESTS, GATEWAY_REQUEST_DURATION)
# Prometheus itself: `up` of each scrape target.
PROMETHEUS_UP = Metric("up", "gauge", "Prometheus: 1 when the last scrape of the target succeeded.")

ALL_METRICS = (*dict.fromkeys((*OPERATOR_METRICS, *TRAINER_METRICS)), *EXTERNAL_METRICS, PROMETHEUS_UP)


def known_series() -> dict[str, Metric]:
    """Every series name a query may use, mapped to its family."""
    return {series: metric for metric in ALL_METRICS for series in metric.series}


def collector(metric: Metric, registry: Any) -> Any:
    """The prometheus_client collector for one definition, on the given CollectorRegistry."""
    from prometheus_client import Counter, Gauge, Histogram

    if metric.kind == "counter":
        return Counter(metric.base_name, metric.help, metric.labels, registry=registry)
    if metric.kind == "histogram":
        return Histogram(metric.name, metric.help, metric.labels, registry=registry, buckets=metric.buckets)
    return Gauge(metric.name, metric.help, metric.labels, registry=registry)


def build_version() -> str:
    """The installed ganforge's version, for ganforge_build_info."""
    try:
        return metadata.version("ganforge")
    except metadata.PackageNotFoundError:
        return "unknown"
