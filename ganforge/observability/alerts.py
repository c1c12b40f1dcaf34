"""ganforge's alerts, as Prometheus rule groups: page on what users feel, ticket on slow decay.

Pages: the serving error and latency objectives burning their budget (multi-window burn rates, as
in the Google SRE workbook: 14.4x over 1 h and 5 min, 6x over 6 h and 30 min), a training job
that makes no progress, checkpoints failing or going stale, the operator gone. Tickets: quality
getting worse, preemption storms, training time lost to recoveries, rolled-back canaries, jobs
that failed, reconcile errors.

`python -m ganforge.local.chart` writes them to charts/ganforge/files/alerts.yaml (the chart's
PrometheusRule embeds that file; `promtool test rules` tests it in tests/observability).
Every alert links its runbook in docs/runbooks/.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ganforge.api import metrics as m

RUNBOOK_BASE_URL = "https://github.com/ganforge/ganforge/blob/main/docs/runbooks"

# Serving objectives (per GANInferenceService model): 99.9% of requests succeed, and 95% finish
# within the latency objective (Traefik's default histogram bucket of 1.2 s, so the SLI needs no
# interpolation).
AVAILABILITY_OBJECTIVE = 0.999
LATENCY_OBJECTIVE_SECONDS = "1.2"
LATENCY_OBJECTIVE = 0.95
# (burn rate, long window, short window, for): the workbook's page thresholds.
BURN_WINDOWS = ((14.4, "1h", "5m", "2m"), (6.0, "6h", "30m", "15m"))
STUCK_AFTER = "15m"
STALE_CHECKPOINT_INTERVALS = 3
STALE_CHECKPOINT_FLOOR_SECONDS = 600
PREEMPTION_STORM_PER_HOUR = 3
LOST_TRAINING_SECONDS_PER_6H = 1800
QUALITY_WORSE_FACTOR = 1.2

# Traefik names the backends of Gateway API routes <namespace>-<service>-<port>@kubernetesgateway.
ROUTES = 'service=~".+@kubernetesgateway"'

Severity = Literal["page", "ticket"]


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    severity: Severity
    summary: str
    description: str
    runbook: str  # file name in docs/runbooks, without .md
    for_: str = "0m"

    def rule(self) -> dict[str, Any]:
        return {"alert": self.name, "expr": self.expr, "for": self.for_,
                "labels": {"severity": self.severity},
                "annotations": {"summary": self.summary, "description": self.description,
                                "runbook_url": f"{RUNBOOK_BASE_URL}/{self.runbook}.md"}}


def _ratio(bad: str, total: str, window: str, by: str) -> str:
    return f"sum by ({by}) (rate({bad}[{window}])) / sum by ({by}) (rate({total}[{window}]))"


def recording_rules() -> list[dict[str, Any]]:
    """The SLIs over every window the burn-rate alerts read, computed once."""
    windows = sorted({w for _, long, short, _ in BURN_WINDOWS for w in (long, short)}, key=_seconds)
    rules = []
    failure, success = m.TRITON_REQUEST_FAILURE.name, m.TRITON_REQUEST_SUCCESS.name
    bucket, count = m.GATEWAY_REQUEST_DURATION.series[0], m.GATEWAY_REQUEST_DURATION.series[2]
    fast = f'le="{LATENCY_OBJECTIVE_SECONDS}"'
    for window in windows:
        rules.append({"record": f"ganforge:serving_error_ratio:rate{window}",
                      "expr": f"sum by (namespace, model) (rate({failure}[{window}])) / "
                              f"(sum by (namespace, model) (rate({failure}[{window}])) + "
                              f"sum by (namespace, model) (rate({success}[{window}])))"})
        rules.append({"record": f"ganforge:serving_slow_ratio:rate{window}",
                      "expr": f"1 - (sum by (service) (rate({bucket}{{{fast}, {ROUTES}}}[{window}]))"
                              f" / sum by (service) (rate({count}{{{ROUTES}}}[{window}])))"})
    return rules


def _seconds(window: str) -> int:
    return int(window[:-1]) * {"m": 60, "h": 3600}[window[-1]]


def _burn(record: str, objective: float) -> str:
    budget = round(1 - objective, 6)
    return " or ".join(
        f"(ganforge:{record}:rate{long} > {rate} * {budget} and ganforge:{record}:rate{short} > {rate} * {budget})"
        for rate, long, short, _ in BURN_WINDOWS)


def alerts() -> list[Alert]:
    job = "job_name"
    return [
        Alert("GanforgeServingErrorBudgetBurn", _burn("serving_error_ratio", AVAILABILITY_OBJECTIVE), "page",
              "{{ $labels.namespace }}/{{ $labels.model }} fails too many requests",
              f"Triton fails so many requests that the {AVAILABILITY_OBJECTIVE:.1%} availability objective's "
              "monthly error budget is gone within days (ganforge:serving_error_ratio:rate5m says how many).",
              "serving-errors", "2m"),
        Alert("GanforgeServingLatencyBudgetBurn", _burn("serving_slow_ratio", LATENCY_OBJECTIVE), "page",
              "{{ $labels.service }} answers too slowly",
              f"Too many requests take longer than {LATENCY_OBJECTIVE_SECONDS} s (objective: p95 within it): the "
              "latency budget burns fast (ganforge:serving_slow_ratio:rate5m says how many).", "serving-latency",
              "2m"),
        Alert("GanforgeTrainingStuck", f"changes({m.TRAINER_KIMG.name}[{STUCK_AFTER}]) == 0", "page",
              "Training job {{ $labels.job_name }} makes no progress",
              f"kimg of {{{{ $labels.namespace }}}}/{{{{ $labels.{job} }}}} has not moved for {STUCK_AFTER} while its "
              "trainer runs: a hung collective, a stuck data read or a dead rank.", "stuck-gang", "5m"),
        Alert("GanforgeCheckpointsFailing", f"increase({m.TRAINER_CHECKPOINT_FAILURES.name}[15m]) > 0", "page",
              "Checkpoints of {{ $labels.job_name }} fail",
              "A checkpoint write failed in the last 15 minutes: a preemption now loses everything since the last "
              "good checkpoint, and the trainer stops after three failures in a row.", "corrupted-checkpoint"),
        Alert("GanforgeCheckpointStale",
              f"(time() - {m.TRAINER_LAST_CHECKPOINT_TIMESTAMP.name}) > {STALE_CHECKPOINT_FLOOR_SECONDS} and "
              f"(time() - {m.TRAINER_LAST_CHECKPOINT_TIMESTAMP.name}) > {STALE_CHECKPOINT_INTERVALS} * "
              f"{m.TRAINER_CHECKPOINT_INTERVAL.name} * 1000 / {m.TRAINER_IMAGES_PER_SECOND.name}", "page",
              "The newest checkpoint of {{ $labels.job_name }} is old",
              f"No checkpoint for more than {STALE_CHECKPOINT_INTERVALS} checkpoint intervals at the current "
              "throughput: a preemption would lose all of it.", "corrupted-checkpoint", "5m"),
        Alert("GanforgeOperatorDown", f'absent({m.BUILD_INFO.name}{{component="operator"}})', "page",
              "The ganforge operator is not running",
              "No operator has been scraped for 5 minutes: jobs are not restarted after a preemption, nothing "
              "is exported or rolled out.", "operator-down", "5m"),
        Alert("GanforgeQualityWorsening",
              f'{m.JOB_EVALUATION.name}{{metric=~"fd_.*"}} > {QUALITY_WORSE_FACTOR} * '
              f'min_over_time({m.JOB_EVALUATION.name}{{metric=~"fd_.*"}}[6h])', "ticket",
              "Quality of {{ $labels.job_name }} is getting worse",
              f"{{{{ $labels.metric }}}} is more than {QUALITY_WORSE_FACTOR}x its best of the last 6 hours: mode "
              "collapse, divergence or a discriminator that memorised the data.", "mode-collapse", "30m"),
        Alert("GanforgePreemptionStorm",
              f'increase({m.OPERATOR_RESTARTS.name}{{cause="preemption"}}[1h]) > {PREEMPTION_STORM_PER_HOUR}',
              "ticket", "Preemption storm",
              f"More than {PREEMPTION_STORM_PER_HOUR} gangs were restarted after a disruption in the last hour: "
              "spot capacity is being reclaimed faster than training recovers.", "preemption-storm"),
        Alert("GanforgeLostTrainingTimeHigh",
              f"sum(increase({m.OPERATOR_RECOVERY.series[1]}[6h])) > {LOST_TRAINING_SECONDS_PER_6H}", "ticket",
              "Recoveries cost too much training time",
              f"Gangs spent more than {LOST_TRAINING_SECONDS_PER_6H // 60} minutes of the last 6 hours between a "
              "disruption and running again.", "preemption-storm"),
        Alert("GanforgeCanaryRolledBack",
              f'increase({m.OPERATOR_ROLLOUT_OUTCOMES.name}{{outcome="rolled_back"}}[1h]) > 0', "ticket",
              "A canary was rolled back",
              "A GANInferenceService rolled a new revision back in the last hour; the stable revision serves.",
              "canary-rolled-back"),
        Alert("GanforgeJobFailed", f'increase({m.OPERATOR_JOB_OUTCOMES.name}{{outcome="failed"}}[1h]) > 0',
              "ticket", "A training job failed",
              "A GANTrainingJob ended Failed in the last hour; its status.lastFailure says why (OOMKilled, "
              "a data error, backoffLimit exceeded).", "job-failed"),
        Alert("GanforgeReconcileErrors", f"sum(rate({m.OPERATOR_RECONCILE_ERRORS.name}[15m])) > 0.05", "ticket",
              "The operator's reconciles keep failing",
              "More than one reconcile pass in 20 fails (refused writes, apiserver errors, exceptions).",
              "operator-down", "15m"),
    ]


def rule_groups() -> dict[str, Any]:
    """The rule file: recording rules first, then the alerts (Prometheus's rule-file format)."""
    return {"groups": [
        {"name": "ganforge-slis", "rules": recording_rules()},
        {"name": "ganforge-alerts", "rules": [alert.rule() for alert in alerts()]},
    ]}
