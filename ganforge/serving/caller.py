"""A client that calls a served generator without pause, from its own thread, and counts.

What a rollout is judged by from the outside: `make demo` and the e2e tests run one against the
stable endpoint (and one through the Gateway) while revisions come and go.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from ganforge.serving.client import GeneratorClient, ServingError, latents


class ContinuousCaller(threading.Thread):
    """Generates `shape[0]` images per request until `stop` is set. Its client connection is made
    and used in this thread only (a GeneratorClient is not thread-safe)."""

    def __init__(self, url: str, model_name: str, shape: tuple[int, ...], num_classes: int | None = None,
                 finite: bool = True, pause: float = 0.05, connect_timeout: float = 60.0) -> None:
        super().__init__(daemon=True)
        self.url, self.model_name, self.shape, self.num_classes = url, model_name, shape, num_classes
        # finite=False counts only failed requests, not what a (canary) generator answered.
        self.finite, self.pause = finite, pause
        # A route or Service just created answers a moment later: connecting is retried this long.
        self.connect_timeout = connect_timeout
        self.stop = threading.Event()
        self.requests = 0
        self.failures: list[str] = []
        self.failure_times: list[float] = []  # time.monotonic() of each failure

    def _connect(self) -> GeneratorClient | None:
        deadline = time.monotonic() + self.connect_timeout
        while not self.stop.is_set():
            try:
                return GeneratorClient(self.url, self.model_name, timeout=10)
            except (ServingError, OSError) as error:
                if time.monotonic() > deadline:
                    self.failures.append(f"connecting: {error}")
                    self.failure_times.append(time.monotonic())
                    return None
                time.sleep(0.5)
        return None

    def run(self) -> None:
        generator = self._connect()
        if generator is None:
            return
        z, labels = latents(generator.model, self.shape[0], seed=1, num_classes=self.num_classes)
        with generator:
            while not self.stop.is_set():
                try:
                    images = generator.generate(z, labels)
                    if images.shape != self.shape:
                        raise ServingError(f"answered shape {images.shape}, expected {self.shape}")
                    if self.finite and not np.isfinite(images).all():
                        raise ServingError("answered non-finite pixels")
                except Exception as error:  # every failure counts, whatever its type
                    self.failures.append(repr(error))
                    self.failure_times.append(time.monotonic())
                self.requests += 1
                time.sleep(self.pause)

    def finish(self, timeout: float = 30) -> None:
        self.stop.set()
        self.join(timeout=timeout)
