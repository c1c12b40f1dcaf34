"""Which series a PromQL query reads, from its parse tree (promql-parser), for the lint tests of
the alerts and dashboards: a query that does not parse, or reads a series no component exposes,
is an error, not an empty panel found in an incident."""

from __future__ import annotations

import re
from typing import Any

# Grafana's variables become what Prometheus would see once Grafana substitutes them: interval
# variables a duration, dashboard variables a regular expression inside a label matcher.
_GRAFANA_INTERVALS = re.compile(r"\$__(rate_interval|interval|range)")
_GRAFANA_VARIABLES = re.compile(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?")


def as_prometheus_sees_it(query: str) -> str:
    return _GRAFANA_VARIABLES.sub(".*", _GRAFANA_INTERVALS.sub("5m", query))


def series_names(query: str) -> set[str]:
    """The metric names every selector of the query reads; raises ValueError when it does not parse."""
    import promql_parser

    try:
        tree = promql_parser.parse(as_prometheus_sees_it(query))
    except Exception as error:  # the parser raises its own (Rust) exception types
        raise ValueError(f"{query!r} does not parse: {error}") from None
    names: set[str] = set()
    _collect(tree, names)
    return names


def _collect(node: Any, names: set[str]) -> None:
    kind = type(node).__name__
    if kind == "VectorSelector":
        name = node.name or next((m.value for m in node.matchers.matchers if m.name == "__name__"), None)
        if name is None:
            raise ValueError(f"a selector without a metric name: {node}")
        names.add(name)
        return
    for attribute in ("lhs", "rhs", "expr", "vector_selector", "param"):
        child = getattr(node, attribute, None)
        if child is not None:
            _collect(child, names)
    for child in getattr(node, "args", None) or []:
        _collect(child, names)


def recorded_series() -> set[str]:
    """The series ganforge's own recording rules create."""
    from ganforge.observability.alerts import recording_rules

    return {rule["record"] for rule in recording_rules()}


def unknown_series(queries: list[str]) -> list[str]:
    """One line per series a query reads that nothing exposes or records (a typo, a renamed metric)."""
    from ganforge.api.metrics import known_series

    known = set(known_series()) | recorded_series()
    return [f"{name} in {query!r}" for query in queries for name in sorted(series_names(query) - known)]
