"""ganforge's Grafana dashboards, built in Python: executive (quality, jobs, cost), on-call
(serving latency and errors, checkpoints, preemptions, the operator) and debug (losses, gradient
norms, throughput, step phases, checkpoints of one job).

`python -m ganforge.local.chart` writes them to charts/ganforge/files/dashboards/*.json; the chart
ships each as a ConfigMap labelled for the Grafana sidecar (grafana_dashboard: "1"). The lint tests
parse every query and check every series it reads against ganforge.api.metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ganforge.api import metrics as m

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRID_WIDTH = 24
JOB = 'job_name=~"$job_name"'
SERVICE = 'service=~".*$service.*"'


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[tuple[str, str], ...]  # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 12
    description: str = ""

    def to_json(self, panel_id: int, x: int, y: int) -> dict[str, Any]:
        return {
            "id": panel_id, "type": self.kind, "title": self.title, "description": self.description,
            "datasource": DATASOURCE, "gridPos": {"x": x, "y": y, "w": self.width, "h": 8},
            "fieldConfig": {"defaults": {"unit": self.unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if self.kind == "timeseries" else {},
            "targets": [{"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend, "datasource": DATASOURCE}
                        for i, (expr, legend) in enumerate(self.queries)],
        }


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    variables: tuple[tuple[str, str], ...] = field(default=())  # (name, label_values(...) query)

    def to_json(self) -> dict[str, Any]:
        placed, x, y = [], 0, 0
        for index, panel in enumerate(self.panels, start=1):
            if x + panel.width > GRID_WIDTH:
                x, y = 0, y + 8
            placed.append(panel.to_json(index, x, y))
            x += panel.width
        templating: list[dict[str, Any]] = [
            {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}]
        templating += [{"name": name, "type": "query", "datasource": DATASOURCE, "query": query,
                        "definition": query, "refresh": 2, "includeAll": True, "multi": True,
                        "current": {"text": "All", "value": "$__all"}, "allValue": ".*"}
                       for name, query in self.variables]
        return {"uid": self.uid, "title": self.title, "description": self.description, "tags": ["ganforge"],
                "schemaVersion": 39, "version": 1, "editable": False, "timezone": "utc",
                "time": {"from": "now-24h", "to": "now"}, "refresh": "1m",
                "templating": {"list": templating}, "panels": placed}

    def queries(self) -> list[str]:
        """Every panel's PromQL."""
        return [expr for panel in self.panels for expr, _ in panel.queries]

    def variable_series(self) -> set[str]:
        """The series the variables' label_values(series, label) read."""
        return {query.removeprefix("label_values(").split(",")[0].strip() for _, query in self.variables}


def _rate(metric: m.Metric, selector: str = "", by: str = "") -> str:
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({metric.name}{{{selector}}}[$__rate_interval]))"


def _quantile(q: float, metric: m.Metric, selector: str, by: str) -> str:
    return f"histogram_quantile({q}, sum by (le, {by}) (rate({metric.series[0]}{{{selector}}}[$__rate_interval])))"


def executive() -> Dashboard:
    fd = f'{m.JOB_EVALUATION.name}{{metric=~"fd_.*", {JOB}}}'
    return Dashboard("ganforge-executive", "ganforge / executive",
                     "Is training producing better generators, how many jobs succeed, and what it costs.", (
        Panel("Quality (FD, lower is better)", ((fd, "{{job_name}} {{metric}}"),)),
        Panel("Jobs by phase", ((f"sum by (phase) ({m.OPERATOR_JOBS.name})", "{{phase}}"),)),
        Panel("Job outcomes per day", ((f"sum by (outcome) (increase({m.OPERATOR_JOB_OUTCOMES.name}[1d]))",
                                        "{{outcome}}"),), width=8),
        Panel("GPU hours (range)", ((f'sum by (job_name) (increase({m.TRAINER_DEVICE_SECONDS.name}'
                                     f'{{device="cuda", {JOB}}}[$__range])) / 3600', "{{job_name}}"),),
              unit="h", kind="stat", width=8),
        Panel("Training hours lost to recoveries (range)",
              ((f"sum(increase({m.OPERATOR_RECOVERY.series[1]}[$__range])) / 3600", "lost"),),
              unit="h", kind="stat", width=8,
              description="Time between a disruption and the new gang running, summed over all jobs."),
        Panel("Rollouts per day", ((f"sum by (outcome) (increase({m.OPERATOR_ROLLOUT_OUTCOMES.name}[1d]))",
                                    "{{outcome}}"),)),
        Panel("Training throughput", ((f"sum by (job_name) ({m.TRAINER_IMAGES_PER_SECOND.name}{{{JOB}}})",
                                       "{{job_name}}"),), unit="short"),
    ), (("job_name", f"label_values({m.TRAINER_KIMG.name}, job_name)"),))


def on_call() -> Dashboard:
    return Dashboard("ganforge-on-call", "ganforge / on-call",
                     "What users feel: serving latency and errors; what loses work: checkpoints, preemptions.", (
        Panel("Serving p95 / p99 latency (gateway)", (
            (_quantile(0.95, m.GATEWAY_REQUEST_DURATION, SERVICE, "service"), "p95 {{service}}"),
            (_quantile(0.99, m.GATEWAY_REQUEST_DURATION, SERVICE, "service"), "p99 {{service}}")), unit="s"),
        Panel("Serving error ratio (Triton)", (("ganforge:serving_error_ratio:rate5m", "{{namespace}}/{{model}}"),),
              unit="percentunit"),
        Panel("Requests per revision (Triton)", (
            (_rate(m.TRITON_REQUEST_SUCCESS, by="namespace, pod, model"), "ok {{pod}}"),
            (_rate(m.TRITON_REQUEST_FAILURE, by="namespace, pod, model"), "failed {{pod}}")), unit="reqps"),
        Panel("Gateway responses by code", ((_rate(m.GATEWAY_REQUESTS, SERVICE, "service, code"),
                                             "{{code}} {{service}}"),), unit="reqps"),
        Panel("Canary weight", ((f"{m.SERVING_CANARY_WEIGHT.name}", "{{namespace}}/{{service}}"),),
              unit="percentunit", width=8),
        Panel("Canary gates (1 = passing)", ((f"{m.SERVING_GATE_PASSING.name}", "{{service}} {{gate}}"),), width=8),
        Panel("Operator up", ((f'count({m.BUILD_INFO.name}{{component="operator"}})', "replicas"),),
              kind="stat", width=8),
        Panel("Checkpoint age", ((f"time() - {m.TRAINER_LAST_CHECKPOINT_TIMESTAMP.name}{{{JOB}}}",
                                  "{{job_name}}"),), unit="s"),
        Panel("Checkpoint failures", ((f"sum by (job_name) (increase({m.TRAINER_CHECKPOINT_FAILURES.name}"
                                       f"{{{JOB}}}[1h]))", "{{job_name}}"),)),
        Panel("Gang restarts by cause (per hour)", ((f"sum by (cause) (increase({m.OPERATOR_RESTARTS.name}[1h]))",
                                                     "{{cause}}"),)),
        Panel("Recovery time after a disruption (p95)", (
            (_quantile(0.95, m.OPERATOR_RECOVERY, "", "cause"), "{{cause}}"),), unit="s"),
        Panel("Reconcile errors by kind", ((_rate(m.OPERATOR_RECONCILE_ERRORS, by="kind"), "{{kind}}"),),
              unit="ops", width=12),
        Panel("Apiserver requests by code", ((_rate(m.OPERATOR_API_REQUESTS, by="verb, code"), "{{verb}} {{code}}"),),
              unit="reqps", width=12),
    ), (("job_name", f"label_values({m.TRAINER_KIMG.name}, job_name)"),
        ("service", f"label_values({m.GATEWAY_REQUESTS.name}, service)")))


def debug() -> Dashboard:
    return Dashboard("ganforge-debug", "ganforge / debug",
                     "One job from the inside: losses, gradients, D's outputs, throughput, where a step's time "
                     "goes, checkpoints. The latest samples: `ganforge report <job>`.", (
        Panel("Losses", ((f"{m.TRAINER_LOSS.name}{{{JOB}}}", "{{job_name}} {{network}}"),)),
        Panel("Gradient norms", ((f"{m.TRAINER_GRAD_NORM.name}{{{JOB}}}", "{{job_name}} {{network}}"),)),
        Panel("D outputs (real vs fake)", ((f"{m.TRAINER_D_OUTPUT.name}{{{JOB}}}", "{{job_name}} {{input}}"),)),
        Panel("Images per second", ((f"{m.TRAINER_IMAGES_PER_SECOND.name}{{{JOB}}}", "{{job_name}}"),)),
        Panel("Step time by phase", ((f"{m.TRAINER_STEP_PHASE_SECONDS.name}{{{JOB}}}", "{{job_name}} {{phase}}"),),
              unit="s"),
        Panel("Progress (kimg)", ((f"{m.TRAINER_KIMG.name}{{{JOB}}}", "{{job_name}}"),
                                  (f"{m.TRAINER_LAST_CHECKPOINT_KIMG.name}{{{JOB}}}", "checkpoint {{job_name}}"))),
        Panel("Checkpoint time p95 by phase", (
            (_quantile(0.95, m.TRAINER_CHECKPOINT_SECONDS, JOB, "job_name, phase"), "{{job_name}} {{phase}}"),),
              unit="s"),
        Panel("Evaluation metrics", ((f"{m.JOB_EVALUATION.name}{{{JOB}}}", "{{job_name}} {{metric}}"),)),
        Panel("GPU memory", ((f"{m.TRAINER_GPU_MEMORY.name}{{{JOB}}}", "{{job_name}} {{kind}}"),), unit="bytes"),
        Panel("GPU utilisation", ((f"{m.TRAINER_GPU_UTILIZATION.name}{{{JOB}}}", "{{job_name}}"),),
              unit="percentunit"),
    ), (("job_name", f"label_values({m.TRAINER_KIMG.name}, job_name)"),))


def dashboards() -> list[Dashboard]:
    return [executive(), on_call(), debug()]
