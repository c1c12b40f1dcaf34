"""config.pbtxt for both Triton profiles, from one code path."""

from __future__ import annotations

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from ganforge.api.inference_service import TritonProfile, TritonSpec
from ganforge.serving.model_repository import ModelFacts, render_config

CONDITIONAL = ModelFacts(latent_dim=64, num_classes=10, channels=1, resolution=32)


def test_cluster_profile_uses_the_onnxruntime_backend_with_capped_threads() -> None:
    config = render_config(CONDITIONAL, "onnxruntime", TritonSpec(instances=2, threads=3, max_batch_size=32))
    assert 'platform: "onnxruntime_onnx"' in config and "backend:" not in config
    assert "max_batch_size: 32" in config and "instance_group [ { count: 2 kind: KIND_CPU } ]" in config
    assert 'key: "intra_op_thread_count" value: { string_value: "3" }' in config
    assert not any(line.startswith("name:") for line in config.splitlines())  # Triton uses the directory's name


def test_local_profile_runs_the_python_model_and_the_label_is_one_integer_per_sample() -> None:
    config = render_config(CONDITIONAL, "python-onnxruntime", TritonSpec())
    assert 'backend: "python"' in config and "platform:" not in config
    assert '{ name: "z" data_type: TYPE_FP32 dims: [ 64 ] }' in config
    assert '{ name: "label" data_type: TYPE_INT64 dims: [ 1 ] reshape: { shape: [ ] } }' in config
    assert '{ name: "image" data_type: TYPE_FP32 dims: [ 1, 32, 32 ] }' in config
    assert "dynamic_batching { max_queue_delay_microseconds: 2000 }" in config


def test_warmup_feeds_zeros_at_batch_one_and_at_the_max_batch() -> None:
    config = render_config(CONDITIONAL, "python-onnxruntime", TritonSpec(max_batch_size=16))
    assert 'name: "warmup-1" batch_size: 1' in config and 'name: "warmup-16" batch_size: 16' in config
    # Random warm-up data is arbitrary bytes: as floats they can be NaN, which the model refuses.
    assert "random_data" not in config and config.count("zero_data: true") == 4


def test_an_unconditional_model_has_no_label_input() -> None:
    config = render_config(ModelFacts(16, 0, 3, 64), "onnxruntime", TritonSpec())
    assert "label" not in config and "dims: [ 3, 64, 64 ]" in config


@pytest.mark.parametrize("profile", ["onnxruntime", "python-onnxruntime"])
def test_both_profiles_parse_as_a_triton_model_config_with_batching_and_warmup(profile: TritonProfile) -> None:
    # Triton's own ModelConfig message: a misspelt field or a wrong nesting fails the parse, as it
    # would fail the model's load.
    config = text_format.Parse(render_config(CONDITIONAL, profile, TritonSpec(max_batch_size=16, threads=2)),
                               model_config_pb2.ModelConfig())
    assert config.max_batch_size == 16 and config.HasField("dynamic_batching")
    assert config.dynamic_batching.max_queue_delay_microseconds == TritonSpec().max_queue_delay_microseconds
    assert [(w.name, w.batch_size) for w in config.model_warmup] == [("warmup-1", 1), ("warmup-16", 16)]
    for warmup in config.model_warmup:
        assert set(warmup.inputs) == {"z", "label"} and all(i.zero_data for i in warmup.inputs.values())
    assert [(g.count, g.kind) for g in config.instance_group] == [(1, model_config_pb2.ModelInstanceGroup.KIND_CPU)]
    assert config.parameters["intra_op_thread_count"].string_value == "2"
    if profile == "onnxruntime":
        assert config.platform == "onnxruntime_onnx" and config.default_model_filename == "model.onnx"
        assert config.parameters["inter_op_thread_count"].string_value == "1"
    else:
        assert config.backend == "python" and not config.platform
