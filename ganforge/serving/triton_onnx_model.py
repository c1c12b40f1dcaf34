"""Triton python-backend model that runs the exported generator (model.onnx) with onnxruntime.

This is the local serving profile: the `tritonserver` of the PyPI wheel nvidia-pytriton ships only
the python backend, so the same ONNX file that clusters serve with `platform: onnxruntime_onnx`
runs here through onnxruntime inside Triton. The export copies this file to `<model>/1/model.py`;
it runs in Triton's own Python environment and imports nothing from ganforge.

Errors are raised, never returned as error responses: Triton counts an error *response* from a
python model as a success in nv_inference_request_success, which would hide failures from the
serving gate. Every request of the failed batch then gets the error.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils  # provided by Triton's python backend


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        options = ort.SessionOptions()
        # One instance, a bounded number of threads: instances x threads is what the pod uses.
        options.intra_op_num_threads = int(parameters.get("intra_op_thread_count", "1"))
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        path = os.path.join(args["model_repository"], args["model_version"], parameters.get("onnx_file", "model.onnx"))
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.inputs = [item.name for item in self.session.get_inputs()]
        self.num_classes = 0
        if "label" in self.inputs:
            metadata = self.session.get_modelmeta().custom_metadata_map
            self.num_classes = int(metadata.get("ganforge.numClasses", "0"))

    def execute(self, requests: list[Any]) -> list[Any]:
        feeds: dict[str, list[np.ndarray]] = {name: [] for name in self.inputs}
        sizes = []
        for request in requests:
            for name in self.inputs:
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                if tensor is None:
                    raise pb_utils.TritonModelException(f"input {name!r} is required")
                feeds[name].append(tensor.as_numpy())
            sizes.append(int(feeds[self.inputs[0]][-1].shape[0]))
        # One request (a full batch, or no concurrency) needs no copy into a merged batch.
        batch = {name: parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0) for name, parts in feeds.items()}
        if "label" in batch:
            batch["label"] = batch["label"].reshape(-1).astype(np.int64, copy=False)
            labels = batch["label"]
            if labels.size and (labels.min() < 0 or (self.num_classes and labels.max() >= self.num_classes)):
                raise pb_utils.TritonModelException(
                    f"label must lie in [0, {self.num_classes}), got values from {labels.min()} to {labels.max()}")
        images = self.session.run(["image"], batch)[0]
        if not np.isfinite(images).all():
            raise pb_utils.TritonModelException("the generator produced non-finite pixels")
        responses = []
        start = 0
        for size in sizes:
            output = pb_utils.Tensor("image", images[start:start + size])
            responses.append(pb_utils.InferenceResponse(output_tensors=[output]))
            start += size
        return responses

    def finalize(self) -> None:
        self.session = None
