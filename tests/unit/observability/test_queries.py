"""Every query of the dashboards and alerts parses and reads only series that a component exposes
(ganforge.api.metrics) or a recording rule records; every alert links a runbook that exists."""

from __future__ import annotations

import dataclasses
import json

import pytest

from ganforge.api.metrics import known_series
from ganforge.local import chart
from ganforge.observability import dashboards, observed
from ganforge.observability.alerts import RUNBOOK_BASE_URL, alerts, recording_rules
from ganforge.observability.dashboards import Panel
from ganforge.observability.promql import series_names, unknown_series

RUNBOOKS = chart.ROOT / "docs" / "runbooks"


@pytest.mark.parametrize("dashboard", dashboards.dashboards(), ids=lambda d: d.uid)
def test_every_dashboard_query_reads_known_series(dashboard: dashboards.Dashboard) -> None:
    assert dashboard.queries()
    assert unknown_series(dashboard.queries()) == []
    assert dashboard.variable_series() <= set(known_series())


def test_a_typo_in_a_metric_name_fails_the_lint() -> None:
    debug = dashboards.debug()
    typo = Panel("Losses", (('ganforge_trainer_los{job_name=~"$job_name"}', "{{network}}"),))
    planted = dataclasses.replace(debug, panels=(typo, *debug.panels[1:]))
    assert unknown_series(planted.queries()) == [
        "ganforge_trainer_los in 'ganforge_trainer_los{job_name=~\"$job_name\"}'"]


def test_every_report_query_reads_known_series() -> None:
    queries = [chart.for_job("team-a", "fashion") for chart in observed.CHARTS]
    assert all('namespace="team-a"' in q and 'job_name="fashion"' in q for q in queries), queries
    assert unknown_series(queries) == []


def test_a_query_that_does_not_parse_is_an_error() -> None:
    with pytest.raises(ValueError, match="does not parse"):
        series_names("sum(rate(ganforge_trainer_kimg[5m])")


def test_every_alert_and_recording_rule_reads_known_series() -> None:
    assert unknown_series([rule["expr"] for rule in recording_rules()]) == []
    assert unknown_series([alert.expr for alert in alerts()]) == []


def test_every_alert_has_a_severity_and_a_runbook_that_exists() -> None:
    for alert in alerts():
        rule = alert.rule()
        assert rule["labels"]["severity"] in ("page", "ticket")
        url = rule["annotations"]["runbook_url"]
        assert url.startswith(RUNBOOK_BASE_URL + "/")
        assert (RUNBOOKS / url.removeprefix(RUNBOOK_BASE_URL + "/")).is_file(), url


def test_dashboards_are_grafana_json_with_unique_panel_ids() -> None:
    for dashboard in dashboards.dashboards():
        model = json.loads(json.dumps(dashboard.to_json()))
        ids = [panel["id"] for panel in model["panels"]]
        assert len(ids) == len(set(ids)) and model["uid"] == dashboard.uid
        for panel in model["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24 and panel["targets"], panel["title"]
