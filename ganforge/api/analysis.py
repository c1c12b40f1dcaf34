"""What a canary analysis reports: measurements, each with its bound and verdict, and one verdict
for the whole analysis.

The analysis pod (ganforge.serving) writes an `AnalysisResult` as its termination message; the
operator reads it back from the pod's status and copies the measurements into the service's
rollout status. The pod needs no API token for that, and the operator no torch.

The verdicts follow Argo Rollouts' analysis semantics: `Fail` aborts the rollout, `Inconclusive`
pauses it for a person, and only `Pass` lets it proceed. A measurement that could not be taken is
`Inconclusive`, never `Pass`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import ConfigDict, Field

from ganforge.api.training_job import ApiModel

Verdict = Literal["Pass", "Fail", "Inconclusive"]

# Kubernetes truncates a termination message at 4096 bytes; the result is kept well below.
TERMINATION_MESSAGE_LIMIT = 4096


class Measurement(ApiModel):
    # Read back from pods and from status: fields a newer version added are ignored, not fatal.
    model_config = ConfigDict(extra="ignore")

    name: str = Field(max_length=63, description="What was measured, e.g. deltaKid, p95LatencyMs, nonFinitePixels.")
    value: float | None = Field(None, description="The measured value; null when it could not be measured.")
    bound: float | None = Field(None, description="The bound it was held against; null when it is only reported.")
    lower: float | None = Field(None, description="Lower end of the confidence interval, for interval measurements.")
    upper: float | None = Field(None, description="Upper end of the confidence interval, for interval measurements.")
    verdict: Verdict = Field(description="Pass, Fail or Inconclusive.")
    message: str = Field("", max_length=256, description="Explanation, for people.")


class AnalysisResult(ApiModel):
    model_config = ConfigDict(extra="ignore")

    verdict: Verdict = Field(description="Fail if any measurement failed, else Inconclusive if any was, else Pass.")
    measurements: list[Measurement] = Field(default_factory=list, max_length=32, description="Every measurement.")
    feature_extractor: str | None = Field(None, description="Feature space of the quality measurements.")
    sample_size: int = Field(0, ge=0, description="Images generated from each revision for the quality gate.")
    message: str = Field("", max_length=512, description="Summary, for people.")


def describe(measurement: Measurement) -> str:
    """One line for people: `kidIncrease 0.24 [0.18, 0.31] > 0.1: Fail`."""
    m = measurement
    if m.value is None:
        return f"{m.name}: {m.verdict} ({m.message})" if m.message else f"{m.name}: {m.verdict}"
    interval = f" [{m.lower:.3g}, {m.upper:.3g}]" if m.lower is not None and m.upper is not None else ""
    if m.bound is None:
        return f"{m.name} {m.value:.4g}{interval}"
    return f"{m.name} {m.value:.4g}{interval} (bound {m.bound:g}): {m.verdict}"


def reported(name: str, value: float | None, message: str) -> Measurement:
    """A measurement shown beside the gates but held against no bound: it never fails."""
    return Measurement(name=name, value=value, verdict="Pass", message=f"{message} (reported)")


def combined_verdict(verdicts: Iterable[Verdict]) -> Verdict:
    """Fail wins over Inconclusive, which wins over Pass; nothing measured is Inconclusive."""
    seen = set(verdicts)
    if "Fail" in seen:
        return "Fail"
    if "Inconclusive" in seen or not seen:
        return "Inconclusive"
    return "Pass"
