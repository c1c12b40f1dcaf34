"""`GeneratorClient` against the real tritonserver: the same images as `tritonclient` and as
onnxruntime on the file, chunked by the model's max batch size, and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import tritonclient.http as triton_http

from ganforge.api.inference_service import TritonSpec
from ganforge.api.training_job import ModelSpec
from ganforge.local.triton import triton_serving
from ganforge.models import build_generator
from ganforge.serving.client import GeneratorClient, ServingError, latents
from ganforge.serving.export import METADATA_PREFIX, PARITY_BOUNDS, to_onnx
from ganforge.serving.model_repository import ModelFacts, prepare_model_directory, write_revision

MODEL = "conditional"


@pytest.mark.timeout(300)
def test_generator_client_matches_tritonclient_and_onnxruntime(tmp_path: Path) -> None:
    facts = ModelFacts(latent_dim=16, num_classes=10, channels=1, resolution=32)
    torch.manual_seed(0)
    generator = build_generator(ModelSpec(latent_dim=16, width=8), 32, 1, 10).eval()
    model = to_onnx(generator, facts, 17)
    entry = model.metadata_props.add()  # as the export records it: Triton checks labels against it
    entry.key, entry.value = f"{METADATA_PREFIX}numClasses", "10"
    onnx_bytes = model.SerializeToString()
    revision = write_revision(tmp_path / "repository", onnx_bytes, facts, {}, {}, "python-onnxruntime")
    model_dir = tmp_path / "models" / MODEL
    prepare_model_directory(revision.path, revision.sha256, model_dir, "python-onnxruntime",
                            TritonSpec(max_batch_size=8, instances=1, threads=1))
    with triton_serving(model_dir) as triton, GeneratorClient(triton.url, MODEL) as client:
        assert (client.model.latent_dim, client.model.conditional, client.model.max_batch_size) == (16, True, 8)
        z, labels = latents(client.model, 21, seed=3)  # three chunks, the last one short
        assert labels is not None
        images = client.generate(z, labels)
        assert images.shape == (21, 1, 32, 32) and images.dtype == np.float32

        session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        direct = session.run(["image"], {"z": z, "label": labels})[0]
        assert np.abs(images - direct).max() <= PARITY_BOUNDS["fp32"]

        reference = triton_http.InferenceServerClient(url=triton.url)
        inputs = [triton_http.InferInput("z", [8, 16], "FP32"), triton_http.InferInput("label", [8, 1], "INT64")]
        inputs[0].set_data_from_numpy(z[:8])
        inputs[1].set_data_from_numpy(labels[:8].reshape(-1, 1))
        answer = reference.infer(MODEL, inputs).as_numpy("image")
        reference.close()
        assert np.array_equal(answer, images[:8])

        with pytest.raises(ServingError, match="labels are required"):
            client.generate(z)
        with pytest.raises(ServingError, match=r"HTTP 500: .*label must lie in \[0, 10\)"):
            client.generate(z[:2], np.array([3, 10]))
        # The connection survives an error answer.
        assert np.array_equal(client.generate(z[:8], labels[:8]), images[:8])

        with pytest.raises(ServingError, match=r"'missing' .* is not ready"):
            GeneratorClient(triton.url, "missing")
    with pytest.raises(ServingError, match="not host:port"):
        GeneratorClient("no-port", MODEL)
