"""One canary analysis: quality against the stable revision, and serving health of the canary.

Runs in the analysis pod (trainer image; the operator stays torch-free). Everything is measured
through Triton, as users are served:

1. The same seeded latents (and labels) go to the canary's and the stable's revision Service;
   failed canary requests fail the analysis (a generator that produces NaN is refused by the
   model, so its requests fail), failed stable requests make it inconclusive.
2. Hard checks on the canary's pixels, then both sample sets are embedded by the gate's feature
   extractor and held against the reference statistics that travel with the canary's artifact
   (ganforge.evaluation.canary_gate).
3. A bounded load run against the canary alone: client-side p50/p95 latency and error rate, and
   Triton's own `nv_inference_*` counters of the model, read before and after.
"""

from __future__ import annotations

import statistics
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ganforge.api.analysis import AnalysisResult, Measurement, combined_verdict, describe, reported
from ganforge.api.training_job import QualityGate, ServingGate
from ganforge.evaluation import ReferenceStatistics
from ganforge.evaluation.canary_gate import GateSetupError, gate_extractor, hard_checks, quality_measurements
from ganforge.evaluation.features import extract
from ganforge.serving.client import GeneratorClient, ServingError, latents
from ganforge.serving.model_repository import REFERENCE_DIR, RevisionError, verify_revision


@dataclass(frozen=True)
class Endpoints:
    canary: str  # host:port of the canary revision's Service (HTTP)
    stable: str
    canary_metrics: str | None  # http://host:port/metrics of the canary's Triton, or None
    model_name: str


def _generate(url: str, model_name: str, count: int, seed: int) -> np.ndarray:
    with GeneratorClient(url, model_name) as client:
        z, labels = latents(client.model, count, seed)
        return client.generate(z, labels)


def quality(endpoints: Endpoints, revision: Path, revision_sha256: str, gate: QualityGate,
            seed: int) -> tuple[list[Measurement], str | None]:
    """The quality measurements and the feature space they were taken in."""
    try:
        verify_revision(revision, revision_sha256)
        directory = revision / REFERENCE_DIR
        if not directory.is_dir():
            raise GateSetupError(f"revision {revision.name} carries no reference statistics (its job evaluated "
                                 "nothing: spec.evaluation.metrics): the quality gate cannot run")

        def read(name: str) -> bytes:
            return (directory / name).read_bytes()

        reference = ReferenceStatistics.from_files(read)
        extractor = gate_extractor(reference, read, gate.feature_extractor, torch.device("cpu"))
    except (RevisionError, GateSetupError, OSError, KeyError, ValueError) as error:
        return [Measurement(name="qualitySetup", verdict="Inconclusive", message=str(error)[:256])], None
    try:
        canary = _generate(endpoints.canary, endpoints.model_name, gate.sample_size, seed)
    except (ServingError, OSError) as error:
        return [Measurement(name="canaryRequests", verdict="Fail", message=f"the canary failed: {error}"[:256])], None
    try:
        stable = _generate(endpoints.stable, endpoints.model_name, gate.sample_size, seed)
    except (ServingError, OSError) as error:
        return [Measurement(name="stableRequests", verdict="Inconclusive",
                            message=f"the stable failed, nothing to compare with: {error}"[:256])], extractor.name
    measurements = hard_checks(canary, stable, gate)
    if combined_verdict(m.verdict for m in measurements) == "Fail":
        return measurements, extractor.name  # no statistics on NaN or a constant image
    canary_features = extract(extractor, torch.from_numpy(canary)).numpy()
    stable_features = extract(extractor, torch.from_numpy(stable)).numpy()
    measurements += quality_measurements(canary_features, stable_features, reference.features[extractor.name], gate,
                                         seed)
    return measurements, extractor.name


# -- serving -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadRun:
    latencies_ms: list[float]
    errors: int
    first_error: str


def load_run(url: str, model_name: str, gate: ServingGate, seed: int) -> LoadRun:
    """`gate.concurrency` clients, each with its own connection, for `gate.duration_seconds`."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + gate.duration_seconds

    def client(index: int) -> None:
        try:
            generator = GeneratorClient(url, model_name, timeout=10.0)
        except (ServingError, OSError) as error:
            with lock:
                errors.append(str(error))
            return
        with generator:
            z, labels = latents(generator.model, gate.batch_size, seed + index)
            while time.monotonic() < stop:
                started = time.perf_counter()
                try:
                    generator.generate(z, labels)
                except (ServingError, OSError) as error:
                    with lock:
                        errors.append(str(error))
                    time.sleep(0.05)  # a dead endpoint must not spin
                    continue
                with lock:
                    latencies.append((time.perf_counter() - started) * 1000)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(gate.concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(gate.duration_seconds + 30)
    return LoadRun(latencies, len(errors), errors[0] if errors else "")


def triton_counters(metrics_url: str, model_name: str) -> dict[str, float]:
    """The model's nv_inference_* counters (summed over versions) from Triton's Prometheus endpoint."""
    with urllib.request.urlopen(metrics_url, timeout=5) as answer:
        text = answer.read().decode()
    counters: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("nv_inference_") or f'model="{model_name}"' not in line:
            continue
        name, _, value = line.rpartition(" ")
        metric = name.split("{", 1)[0]
        counters[metric] = counters.get(metric, 0.0) + float(value)
    return counters


def serving(endpoints: Endpoints, gate: ServingGate, seed: int,
            counters: Callable[[str, str], dict[str, float]] = triton_counters) -> list[Measurement]:
    before: dict[str, float] | None = None
    if endpoints.canary_metrics:
        try:
            before = counters(endpoints.canary_metrics, endpoints.model_name)
        except OSError:
            before = None
    run = load_run(endpoints.canary, endpoints.model_name, gate, seed)
    total = len(run.latencies_ms) + run.errors
    if total == 0:
        return [Measurement(name="errorRate", verdict="Inconclusive", message="no request completed")]
    error_rate = run.errors / total
    out = [Measurement(
        name="errorRate", value=error_rate, bound=gate.max_error_rate,
        verdict="Pass" if error_rate <= gate.max_error_rate else "Fail",
        message=f"{run.errors} of {total} requests failed" + (f": {run.first_error}"[:180] if run.errors else ""))]
    if len(run.latencies_ms) >= 20:
        quantiles = statistics.quantiles(run.latencies_ms, n=100)
        p95 = quantiles[94]
        out.append(reported("p50LatencyMs", quantiles[49],
                            f"client-side, batch {gate.batch_size}, {gate.concurrency} clients"))
        out.append(Measurement(
            name="p95LatencyMs", value=p95, bound=gate.p95_latency_ms,
            verdict="Pass" if p95 <= gate.p95_latency_ms else "Fail",
            message=f"client-side, batch {gate.batch_size}, {gate.concurrency} clients"))
    elif run.latencies_ms and min(run.latencies_ms) > gate.p95_latency_ms:
        # Too few for a p95, but every request was slower than the bound: so is the p95.
        out.append(Measurement(name="p95LatencyMs", value=min(run.latencies_ms), bound=gate.p95_latency_ms,
                               verdict="Fail", message=f"all {len(run.latencies_ms)} requests slower than the bound "
                                                       "(value: the fastest)"))
    else:
        out.append(Measurement(name="p95LatencyMs", bound=gate.p95_latency_ms, verdict="Inconclusive",
                               message=f"only {len(run.latencies_ms)} requests succeeded: too few for a p95"))
    out += _triton_measurements(endpoints, before, counters)
    return out


def _triton_measurements(endpoints: Endpoints, before: dict[str, float] | None,
                         counters: Callable[[str, str], dict[str, float]]) -> list[Measurement]:
    """Triton's own view of the load run, reported beside the client's; unavailable metrics are
    noted, never a pass or a fail on their own (the client-side figures carry the gate)."""
    if not endpoints.canary_metrics:
        return []
    try:
        after = counters(endpoints.canary_metrics, endpoints.model_name)
    except OSError as error:
        return [reported("tritonMetrics", None, f"unavailable: {error}"[:200])]
    if before is None:
        return [reported("tritonMetrics", None, "unavailable before the load run")]

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    success, failure = delta("nv_inference_request_success"), delta("nv_inference_request_failure")
    out = [reported("tritonRequestSuccess", success, "nv_inference_request_success during the load run"),
           reported("tritonRequestFailure", failure, "nv_inference_request_failure during the load run")]
    if success > 0:
        mean_ms = delta("nv_inference_request_duration_us") / success / 1000
        out.append(reported("tritonMeanRequestMs", mean_ms, "server-side mean request duration"))
    return out


def analyse(endpoints: Endpoints, revision: Path, revision_sha256: str, quality_gate: QualityGate,
            serving_gate: ServingGate, seed: int) -> AnalysisResult:
    measurements, extractor = quality(endpoints, revision, revision_sha256, quality_gate, seed)
    measurements += serving(endpoints, serving_gate, seed)
    verdict = combined_verdict(m.verdict for m in measurements)
    return AnalysisResult(verdict=verdict, measurements=measurements, feature_extractor=extractor,
                          sample_size=quality_gate.sample_size, message=summary(verdict, measurements))


# What a passing analysis is summed up by; a failing or inconclusive one by what failed or was unsure.
HEADLINE = ("kidIncrease", "p95LatencyMs", "errorRate")


def summary(verdict: str, measurements: list[Measurement]) -> str:
    if verdict == "Pass":
        chosen = [m for name in HEADLINE for m in measurements if m.name == name]
    else:
        chosen = [m for m in measurements if m.verdict == verdict]
    return "; ".join(describe(m) for m in chosen[:3])[:512]

