"""What Prometheus saw of a training job, for `ganforge report`: the series the run directory does
not hold (the age of the newest checkpoint over time, the checkpoint stall and write times, the GPU's
memory and utilisation), read with range queries over the run's wall time.

The trainer's series carry the job's name in `job_name`, and scraping adds the pod's `namespace`, so
these queries find one job's series whichever pod or gang exposed them.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from ganforge.api import metrics as catalogue
from ganforge.observability.report import Series

# Enough points for a 560-pixel chart; never finer than ganforge local's 5 s scrape interval.
MAX_POINTS = 250
MIN_STEP_SECONDS = 5.0


class PrometheusUnavailable(Exception):
    """Prometheus did not answer, or answered with an error; the message says which and where."""


@dataclass(frozen=True)
class ObservedChart:
    title: str
    query: str  # `$namespace` and `$job_name` stand for the job's (label values)
    legend: str  # the label whose value names each series, or the name of the one series
    by_label: bool = False  # whether `legend` is a label

    def for_job(self, namespace: str, job_name: str) -> str:
        return self.query.replace("$namespace", json.dumps(namespace)).replace("$job_name", json.dumps(job_name))


def _job(metric: catalogue.Metric, suffix: str = "") -> str:
    return f"{metric.name}{suffix}{{namespace=$namespace, job_name=$job_name}}"


CHARTS = (
    # One line across gangs (each gang's pod is a series of its own); broken at reclaims by the chart.
    ObservedChart("Age of the newest checkpoint (s)",
                  f"time() - max({_job(catalogue.TRAINER_LAST_CHECKPOINT_TIMESTAMP)})", "age"),
    # The histogram's mean per gang: each gang's trainer starts its counts afresh.
    ObservedChart("Checkpoint time per checkpoint, mean (s)",
                  f"sum by (phase) ({_job(catalogue.TRAINER_CHECKPOINT_SECONDS, '_sum')}) / "
                  f"sum by (phase) ({_job(catalogue.TRAINER_CHECKPOINT_SECONDS, '_count')})", "phase", by_label=True),
    ObservedChart("GPU memory (GiB)", f"{_job(catalogue.TRAINER_GPU_MEMORY)} / 2^30", "kind", by_label=True),
    ObservedChart("GPU utilisation (0-1)", _job(catalogue.TRAINER_GPU_UTILIZATION), "utilisation"),
)


def query_range(url: str, query: str, start: float, end: float, step: float) -> list[dict[str, object]]:
    """The `result` of one range query (a matrix)."""
    params = urllib.parse.urlencode({"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}",
                                     "step": f"{step:g}"})
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/api/v1/query_range?{params}", timeout=15) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise PrometheusUnavailable(f"Prometheus at {url} refused {query!r}: HTTP {error.code} "
                                    f"{error.read()[:300].decode(errors='replace')}") from None
    except (OSError, ValueError) as error:
        raise PrometheusUnavailable(f"Prometheus at {url} did not answer: {error}") from None
    if answer.get("status") != "success":
        raise PrometheusUnavailable(f"Prometheus at {url} answered {query!r} with {answer.get('error')}")
    result: list[dict[str, object]] = answer["data"]["result"]
    return result


def observed_charts(url: str, namespace: str, job_name: str, start: float,
                    end: float) -> list[tuple[str, list[Series]]]:
    """(title, series) of every chart that has data for the job between start and end (Unix seconds)."""
    step = max(MIN_STEP_SECONDS, (end - start) / MAX_POINTS)
    # Points at end, end - step, ...: the newest state is always among them.
    start = end - math.ceil((end - start) / step) * step
    charts = []
    for chart in CHARTS:
        series = []
        for one in query_range(url, chart.for_job(namespace, job_name), start, end, step):
            labels = one.get("metric")
            values = one.get("values")
            if not isinstance(labels, dict) or not isinstance(values, list):
                raise PrometheusUnavailable(f"Prometheus at {url} answered {chart.title!r} with no matrix")
            label = str(labels.get(chart.legend, "?")) if chart.by_label else chart.legend
            series.append(Series(label, [(float(t), float(v)) for t, v in values]))
        if series:
            charts.append((chart.title, series))
    return charts
