"""The chart's alerts under `promtool`: the rule file checks clean, and `promtool test rules` fires
each alert on a synthetic series that should page or ticket, and keeps it silent on a healthy one."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ganforge.local import chart
from ganforge.local.monitoring import RULES as LOADED_RULES
from ganforge.local.monitoring import SCRAPE_JOBS, prometheus_config
from ganforge.observability.alerts import Alert, alerts

RULES = chart.CHART / "files" / "alerts.yaml"
TRAINER = 'job_name="fashion", namespace="ns"'
ROUTE = 'service="ns-gen-r1-8000@kubernetesgateway"'


@dataclass(frozen=True)
class Scenario:
    alert: str
    eval_time: str
    firing: dict[str, str]  # series -> values (promtool's expanding notation)
    healthy: dict[str, str]
    labels: dict[str, str]  # the firing alert's labels besides severity


SCENARIOS = [
    Scenario("GanforgeServingErrorBudgetBurn", "70m",
             {'nv_inference_request_success{namespace="ns", model="gen", version="1", pod="p"}': "0+100x120",
              'nv_inference_request_failure{namespace="ns", model="gen", version="1", pod="p"}': "0+10x120"},
             {'nv_inference_request_success{namespace="ns", model="gen", version="1", pod="p"}': "0+100x120",
              'nv_inference_request_failure{namespace="ns", model="gen", version="1", pod="p"}': "0x120"},
             {"namespace": "ns", "model": "gen"}),
    Scenario("GanforgeServingLatencyBudgetBurn", "70m",
             {f'traefik_service_request_duration_seconds_bucket{{{ROUTE}, le="1.2"}}': "0+10x120",
              f"traefik_service_request_duration_seconds_count{{{ROUTE}}}": "0+100x120"},
             {f'traefik_service_request_duration_seconds_bucket{{{ROUTE}, le="1.2"}}': "0+99x120",
              f"traefik_service_request_duration_seconds_count{{{ROUTE}}}": "0+100x120"},
             {"service": "ns-gen-r1-8000@kubernetesgateway"}),
    Scenario("GanforgeTrainingStuck", "30m", {f"ganforge_trainer_kimg{{{TRAINER}}}": "5x40"},
             {f"ganforge_trainer_kimg{{{TRAINER}}}": "0+1x40"}, {"job_name": "fashion", "namespace": "ns"}),
    Scenario("GanforgeCheckpointsFailing", "15m",
             {f"ganforge_trainer_checkpoint_failures_total{{{TRAINER}}}": "0x10 1x20"},
             {f"ganforge_trainer_checkpoint_failures_total{{{TRAINER}}}": "0x30"},
             {"job_name": "fashion", "namespace": "ns"}),
    # Unix time 0 is the test's start: a checkpoint written then is an hour old at 60m; the healthy
    # trainer writes one every minute.
    Scenario("GanforgeCheckpointStale", "60m",
             {f"ganforge_trainer_last_checkpoint_timestamp_seconds{{{TRAINER}}}": "0x70",
              f"ganforge_trainer_checkpoint_interval_kimg{{{TRAINER}}}": "1x70",
              f"ganforge_trainer_images_per_second{{{TRAINER}}}": "100x70"},
             {f"ganforge_trainer_last_checkpoint_timestamp_seconds{{{TRAINER}}}": "0+60x70",
              f"ganforge_trainer_checkpoint_interval_kimg{{{TRAINER}}}": "1x70",
              f"ganforge_trainer_images_per_second{{{TRAINER}}}": "100x70"},
             {"job_name": "fashion", "namespace": "ns"}),
    Scenario("GanforgeOperatorDown", "10m", {'up{job="something-else"}': "1x20"},
             {'ganforge_build_info{component="operator", version="0.1.0"}': "1x20"}, {"component": "operator"}),
    Scenario("GanforgeQualityWorsening", "150m",
             {f'ganforge_job_evaluation{{{TRAINER}, metric="fd_domain"}}': "10x60 20x120"},
             {f'ganforge_job_evaluation{{{TRAINER}, metric="fd_domain"}}': "20-0.05x180"},
             {"job_name": "fashion", "namespace": "ns", "metric": "fd_domain"}),
    Scenario("GanforgePreemptionStorm", "60m", {'ganforge_operator_restarts_total{cause="preemption"}': "0+1x60"},
             {'ganforge_operator_restarts_total{cause="preemption"}': "0x60"}, {"cause": "preemption"}),
    Scenario("GanforgeLostTrainingTimeHigh", "60m",
             {'ganforge_operator_recovery_seconds_sum{cause="preemption"}': "0+100x60"},
             {'ganforge_operator_recovery_seconds_sum{cause="preemption"}': "0+1x60"}, {}),
    Scenario("GanforgeCanaryRolledBack", "15m",
             {'ganforge_operator_rollout_outcomes_total{outcome="rolled_back"}': "0x10 1x10"},
             {'ganforge_operator_rollout_outcomes_total{outcome="rolled_back"}': "0x20"}, {"outcome": "rolled_back"}),
    Scenario("GanforgeJobFailed", "15m", {'ganforge_operator_job_outcomes_total{outcome="failed"}': "0x10 1x10"},
             {'ganforge_operator_job_outcomes_total{outcome="failed"}': "0x20"}, {"outcome": "failed"}),
    Scenario("GanforgeReconcileErrors", "35m", {'ganforge_operator_reconcile_errors_total{kind="http-500"}': "0+10x40"},
             {'ganforge_operator_reconcile_errors_total{kind="http-500"}': "0x40"}, {}),
]


def _annotations(alert: Alert, labels: dict[str, str]) -> dict[str, str]:
    """The annotations as Prometheus renders them: only {{ $labels.x }} is templated in ours."""
    def render(text: str) -> str:
        return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda match: labels.get(match.group(1), ""), text)
    return {key: render(value) for key, value in alert.rule()["annotations"].items()}


def _test_file(tmp_path: Path) -> Path:
    by_name = {alert.name: alert for alert in alerts()}
    tests: list[dict[str, Any]] = []
    for scenario in SCENARIOS:
        alert = by_name[scenario.alert]
        labels = {"severity": alert.severity, **scenario.labels}
        for kind, series, expected in (("firing", scenario.firing, [labels]), ("healthy", scenario.healthy, [])):
            tests.append({
                "name": f"{scenario.alert} {kind}", "interval": "1m",
                "input_series": [{"series": name, "values": values} for name, values in series.items()],
                "alert_rule_test": [{"eval_time": scenario.eval_time, "alertname": scenario.alert, "exp_alerts": [
                    {"exp_labels": exp, "exp_annotations": _annotations(alert, exp)} for exp in expected]}],
            })
    path = tmp_path / "alerts_test.yaml"
    path.write_text(yaml.safe_dump({"rule_files": [str(RULES)], "evaluation_interval": "1m",
                                    "group_eval_order": ["ganforge-slis", "ganforge-alerts"], "tests": tests},
                                   sort_keys=False))
    return path


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: `make tools` installs it (Debian package prometheus)")
    return path


def test_every_alert_has_a_firing_and_a_healthy_scenario() -> None:
    assert sorted(s.alert for s in SCENARIOS) == sorted(alert.name for alert in alerts())


def test_the_rule_file_checks_clean(promtool: str) -> None:
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {sum(len(g['rules']) for g in yaml.safe_load(RULES.read_text())['groups'])} rules found" in (
        result.stdout + result.stderr)


def test_each_alert_fires_on_its_symptom_and_stays_silent_when_healthy(promtool: str, tmp_path: Path) -> None:
    result = subprocess.run([promtool, "test", "rules", str(_test_file(tmp_path))], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_wrong_expectation_fails(promtool: str, tmp_path: Path) -> None:
    """The harness can fail: a healthy series that is expected to page does not pass."""
    path = _test_file(tmp_path)
    document = yaml.safe_load(path.read_text())
    healthy = next(t for t in document["tests"] if t["name"] == "GanforgeTrainingStuck healthy")
    healthy["alert_rule_test"][0]["exp_alerts"] = [{"exp_labels": {"severity": "page"}}]
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    result = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "GanforgeTrainingStuck" in result.stdout + result.stderr


def test_the_local_prometheus_configuration_checks_clean_and_loads_the_rules(promtool: str, tmp_path: Path) -> None:
    config = prometheus_config("http://127.0.0.1:1")
    assert config["rule_files"] == [str(LOADED_RULES)] == [str(RULES)]
    assert [job["job_name"] for job in config["scrape_configs"]] == list(SCRAPE_JOBS)
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
