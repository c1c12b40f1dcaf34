"""Small helpers shared by the integration and e2e tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from ganforge.api.training_job import API_VERSION, KIND
from ganforge.serving.caller import ContinuousCaller

T = TypeVar("T")

# How long an e2e test waits for the operator's first action on a job: its own work takes seconds,
# but a replica that has just replaced another waits out the kopf peering lifetime (60 s) first.
OPERATOR_TAKEOVER_SECONDS = 150


def eventually(probe: Callable[[], T | None], timeout: float = 60, what: str = "condition") -> T:
    """Poll `probe` until it returns something truthy, and return that; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.25)


def fast_job(name: str, **spec: Any) -> dict[str, Any]:
    """A small job on the synthetic dataset: what the failure and crash tests need is the
    operator's behaviour, not a good generator. No export unless asked for."""
    body: dict[str, Any] = {
        "dataset": {"uri": "fake://blobs?n=512&classes=4", "format": "fake", "resolution": 16},
        "model": {"architecture": "dcgan", "latentDim": 16, "width": 8},
        "training": {"totalKimg": 0.64, "batchSize": 16, "reportIntervalKimg": 0.16, "sampleIntervalKimg": 0},
        "resources": {"workers": 2, "gpusPerWorker": 0, "cpu": "500m", "memory": "1Gi", "spot": False},
        "checkpoint": {"intervalKimg": 0.32},
        "evaluation": {"metrics": []},
        "export": {"enabled": False},
        "backoffLimit": 1,
    }
    for key, value in spec.items():
        body[key] = {**body.get(key, {}), **value} if isinstance(value, dict) else value
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": body}


def answering_client(url: str, model_name: str, timeout: float = 30) -> Any:
    """A GeneratorClient once Triton answers at `url`: a Service's proxies learn of a new endpoint
    a moment after it is ready, as on any cluster."""
    from ganforge.serving.client import GeneratorClient, ServingError

    def answers() -> Any:
        try:
            return GeneratorClient(url, model_name, timeout=10)
        except (ServingError, OSError):
            return None

    return eventually(answers, timeout, f"{model_name} to answer at {url}")


class StableClient(ContinuousCaller):
    """A ContinuousCaller that starts once the endpoint answers at all."""

    def __init__(self, url: str, model_name: str, shape: tuple[int, ...], num_classes: int | None = None,
                 finite: bool = True) -> None:
        answering_client(url, model_name).close()
        super().__init__(url, model_name, shape, num_classes, finite)
