"""Calling a served generator over Triton's KServe v2 HTTP protocol (tritonclient)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


class ServingError(Exception):
    """The model endpoint is unreachable, not ready, or answered with an error."""


@dataclass(frozen=True)
class ServedModel:
    url: str  # host:port
    name: str
    latent_dim: int
    conditional: bool
    max_batch_size: int


class GeneratorClient:
    """One keep-alive connection to a served generator. Not thread-safe: one per thread.

    A request whose connection the server closed (a replaced Triton pod closes its idle keep-alive
    connections as it shuts down) is sent once more on a new connection, as HTTP clients do for
    idempotent requests: generating is free of side effects."""

    def __init__(self, url: str, model_name: str, timeout: float = 60.0) -> None:
        import tritonclient.http as triton_http

        self._http, self._url, self._timeout = triton_http, url, timeout
        self._client = self._connect()
        try:
            self.model = self._describe(url, model_name)
        except BaseException:
            self._client.close()
            raise

    def _connect(self) -> Any:
        return self._http.InferenceServerClient(url=self._url, connection_timeout=self._timeout,
                                                network_timeout=self._timeout)

    def _infer(self, inputs: list[Any]) -> np.ndarray:
        from http.client import HTTPException

        outputs = [self._http.InferRequestedOutput("image")]
        try:
            result = self._client.infer(self.model.name, inputs, outputs=outputs)
        except (HTTPException, ConnectionError) as error:  # the connection, not the model
            self._client.close()
            self._client = self._connect()
            try:
                result = self._client.infer(self.model.name, inputs, outputs=outputs)
            except (HTTPException, OSError) as again:
                raise ServingError(f"{self.model.url}: connection lost ({error!r}), and again ({again!r})") from None
        except OSError as error:  # a timeout
            raise ServingError(f"{self.model.url}: {error!r}") from None
        images: np.ndarray = result.as_numpy("image")
        return images

    def _describe(self, url: str, model_name: str) -> ServedModel:
        from tritonclient.utils import InferenceServerException

        try:
            if not self._client.is_model_ready(model_name):
                raise ServingError(f"model {model_name!r} at {url} is not ready")
            metadata = self._client.get_model_metadata(model_name)
            config = self._client.get_model_config(model_name)
        except InferenceServerException as error:
            raise ServingError(f"model {model_name!r} at {url}: {error}") from None
        inputs = {item["name"]: item for item in metadata["inputs"]}
        if "z" not in inputs:
            raise ServingError(f"model {model_name!r} at {url} has no input `z`: not a ganforge generator")
        return ServedModel(url, model_name, int(inputs["z"]["shape"][-1]), "label" in inputs,
                           int(config.get("max_batch_size", 1)) or 1)

    def generate(self, z: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """float32 images [N, C, R, R] in [-1, 1], requested in chunks of the model's max batch size."""
        from tritonclient.utils import InferenceServerException

        model, http = self.model, self._http
        if model.conditional and labels is None:
            raise ServingError(f"model {model.name!r} is conditional: labels are required")
        images = []
        try:
            for start in range(0, len(z), model.max_batch_size):
                chunk = z[start:start + model.max_batch_size]
                inputs: list[Any] = [http.InferInput("z", list(chunk.shape), "FP32")]
                inputs[0].set_data_from_numpy(chunk)
                if model.conditional and labels is not None:
                    label = labels[start:start + model.max_batch_size].reshape(-1, 1)
                    inputs.append(http.InferInput("label", list(label.shape), "INT64"))
                    inputs[1].set_data_from_numpy(label)
                images.append(self._infer(inputs))
        except InferenceServerException as error:
            raise ServingError(f"inference on {model.name!r} at {model.url} failed: {error}") from None
        return np.concatenate(images, axis=0)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> GeneratorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def latents(model: ServedModel, count: int, seed: int, num_classes: int | None = None,
            label: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Seeded latents, and labels for a conditional model: `label` for all, else balanced over
    `num_classes` (default 10)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((count, model.latent_dim)).astype(np.float32)
    if not model.conditional:
        return z, None
    labels = np.full(count, label, dtype=np.int64) if label is not None else (
        np.arange(count) % (num_classes or 10)).astype(np.int64)
    return z, labels
