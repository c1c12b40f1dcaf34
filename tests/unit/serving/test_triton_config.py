"""config.pbtxt for both Triton profiles, from one code path."""

from __future__ import annotations

from ganforge.api.inference_service import TritonSpec
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
