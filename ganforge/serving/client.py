"""Calling a served generator over the KServe v2 HTTP protocol that Triton speaks.

Tensors travel with Triton's binary tensor extension (a JSON header, then the raw bytes), on one
keep-alive connection (`http_connection`). This costs the client half the CPU of
`tritonclient.http` per request of 64 images (benchmarks/serving.py), which matters where callers
share a node with the server, as analysis pods do; any KServe v2 client (tritonclient included)
can call the same endpoint.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ganforge.serving.http_connection import Answer, KeepAliveConnection

HEADER_LENGTH = "Inference-Header-Content-Length"  # the binary tensor extension's split point
DATATYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype(np.float32), "INT64": np.dtype(np.int64)}


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
        host, _, port = url.rpartition(":")
        if not host or not port.isdigit():
            raise ServingError(f"{url!r} is not host:port")
        self._url = url
        self._connection = KeepAliveConnection(host, int(port), timeout)
        try:
            self.model = self._describe(model_name)
        except BaseException:
            self.close()
            raise

    def _exchange(self, method: str, path: str, body: bytes = b"",
                  headers: dict[str, str] | None = None) -> Answer:
        """One request and its whole answer; sent once more on a fresh connection if the server had
        closed this one. Timeouts raise OSError, as the callers expect."""
        try:
            return self._connection.request(method, path, body, headers)
        except ConnectionError as error:  # the connection, not the model
            try:
                return self._connection.request(method, path, body, headers)
            except ConnectionError:
                raise ServingError(f"{self._url}: connection lost twice ({error!r})") from None

    def _json(self, path: str) -> Any:
        answer = self._exchange("GET", path)
        if answer.status != 200:
            raise ServingError(f"{self._url}{path}: HTTP {answer.status}: {_error_text(answer.body)}")
        return json.loads(answer.body) if answer.body else {}

    def _describe(self, model_name: str) -> ServedModel:
        ready = self._exchange("GET", f"/v2/models/{model_name}/ready")
        if ready.status != 200:
            raise ServingError(f"model {model_name!r} at {self._url} is not ready (HTTP {ready.status})")
        metadata = self._json(f"/v2/models/{model_name}")
        config = self._json(f"/v2/models/{model_name}/config")
        inputs = {item["name"]: item for item in metadata.get("inputs", [])}
        if "z" not in inputs:
            raise ServingError(f"model {model_name!r} at {self._url} has no input `z`: not a ganforge generator")
        return ServedModel(self._url, model_name, int(inputs["z"]["shape"][-1]), "label" in inputs,
                           int(config.get("max_batch_size", 1)) or 1)

    def _infer(self, tensors: dict[str, tuple[str, np.ndarray]]) -> np.ndarray:
        arrays = {name: np.ascontiguousarray(array, dtype=DATATYPES[datatype])
                  for name, (datatype, array) in tensors.items()}
        header = json.dumps({
            "inputs": [{"name": name, "shape": list(array.shape), "datatype": tensors[name][0],
                        "parameters": {"binary_data_size": array.nbytes}} for name, array in arrays.items()],
            "outputs": [{"name": "image", "parameters": {"binary_data": True}}],
        }).encode()
        body = b"".join([header, *(array.tobytes() for array in arrays.values())])
        path = f"/v2/models/{self.model.name}/infer"
        answer = self._exchange("POST", path, body, {
            HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream"})
        if answer.status != 200:
            raise ServingError(f"inference on {self.model.name!r} at {self._url} failed: "
                               f"HTTP {answer.status}: {_error_text(answer.body)}")
        header_length = answer.headers.get(HEADER_LENGTH.lower(), "")
        return _output(answer.body, int(header_length) if header_length.isdigit() else len(answer.body), "image")

    def generate(self, z: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """float32 images [N, C, R, R] in [-1, 1], requested in chunks of the model's max batch size."""
        model = self.model
        if model.conditional and labels is None:
            raise ServingError(f"model {model.name!r} is conditional: labels are required")
        images = []
        for start in range(0, len(z), model.max_batch_size):
            tensors = {"z": ("FP32", z[start:start + model.max_batch_size])}
            if model.conditional and labels is not None:
                tensors["label"] = ("INT64", labels[start:start + model.max_batch_size].reshape(-1, 1))
            images.append(self._infer(tensors))
        return images[0] if len(images) == 1 else np.concatenate(images, axis=0)

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> GeneratorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _error_text(body: bytes | bytearray) -> str:
    """Triton's {"error": "..."}, or the body as text."""
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body[:500].decode(errors="replace") or "(empty answer)"


def _output(answer: bytearray, length: int, name: str) -> np.ndarray:
    """Output `name` of an inference answer whose JSON header is `length` bytes long: the raw bytes
    after the header when the server used the binary extension, else the header's JSON `data`."""
    try:
        described = json.loads(answer[:length])
        output = next(item for item in described["outputs"] if item["name"] == name)
        dtype, shape = DATATYPES[output["datatype"]], [int(size) for size in output["shape"]]
    except (ValueError, KeyError, TypeError, StopIteration) as error:
        raise ServingError(f"the answer has no readable output {name!r} ({error!r})") from None
    if "binary_data_size" not in output.get("parameters", {}):
        return np.asarray(output["data"], dtype=dtype).reshape(shape)
    # Outputs follow the header in the order the header lists them.
    offset = length
    for item in described["outputs"]:
        if item["name"] == name:
            break
        offset += int(item["parameters"]["binary_data_size"])
    size = int(output["parameters"]["binary_data_size"])
    if size != dtype.itemsize * math.prod(shape) or offset + size > len(answer):
        raise ServingError(f"output {name!r}: {size} bytes announced for shape {shape}, "
                           f"{len(answer) - offset} received")
    return np.frombuffer(answer, dtype=dtype, count=size // dtype.itemsize, offset=offset).reshape(shape)


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
