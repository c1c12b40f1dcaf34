"""Operator metrics follow the plans it carries out."""

from __future__ import annotations

from ganforge.operator.metrics import OperatorMetrics
from ganforge.operator.reconcile import Event, Plan


def _value(metrics: OperatorMetrics, name: str, labels: dict[str, str] | None = None) -> float | None:
    return metrics.registry.get_sample_value(name, labels or {})


def test_restarts_and_preemptions_are_counted_by_cause() -> None:
    metrics = OperatorMetrics()
    metrics.observe_plan(Plan(events=[Event("Warning", "Preempted", "evicted")]))
    metrics.observe_plan(Plan(events=[Event("Warning", "WorkerFailed", "exit 1")]))
    metrics.observe_plan(Plan(events=[Event("Warning", "Failed", "backoffLimit exceeded")]))
    assert _value(metrics, "ganforge_operator_preemptions_total") == 1
    assert _value(metrics, "ganforge_operator_restarts_total", {"cause": "preemption"}) == 1
    assert _value(metrics, "ganforge_operator_restarts_total", {"cause": "failure"}) == 1
    assert _value(metrics, "ganforge_operator_failed_jobs_total") == 1


def test_jobs_by_phase_move_with_each_job() -> None:
    metrics = OperatorMetrics()
    metrics.set_phase("ns", "a", "Running")
    metrics.set_phase("ns", "b", "Running")
    metrics.set_phase("ns", "a", "Succeeded")
    assert _value(metrics, "ganforge_operator_jobs", {"phase": "Running"}) == 1
    assert _value(metrics, "ganforge_operator_jobs", {"phase": "Succeeded"}) == 1
    metrics.set_phase("ns", "b", None)
    assert _value(metrics, "ganforge_operator_jobs", {"phase": "Running"}) == 0


def test_jobs_by_phase_stay_exact_under_concurrent_passes() -> None:
    """Passes run in worker threads; the per-phase counts must add up whatever the interleaving."""
    import threading

    metrics = OperatorMetrics()
    phases = ["Pending", "Running", "Restarting", "Running", "Succeeded"]

    def one_job(index: int) -> None:
        for phase in phases:
            metrics.set_phase("ns", f"job-{index}", phase)
        if index % 2:
            metrics.set_phase("ns", f"job-{index}", None)

    threads = [threading.Thread(target=one_job, args=(i,)) for i in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert _value(metrics, "ganforge_operator_jobs", {"phase": "Succeeded"}) == 32
    assert all(_value(metrics, "ganforge_operator_jobs", {"phase": p}) == 0 for p in ("Pending", "Running"))
