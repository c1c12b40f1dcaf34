"""What only a GPU shows: exact resume on CUDA in every precision, and the CUDA-only trainer metrics.

`make test-gpu` runs these on a machine with an NVIDIA GPU. Without one every test fails: there is
nothing to fall back to. CI has no GPU and does not run them (`make test` leaves tests/gpu out);
they run without the shared conftest, so a machine with only the trainer's packages can run them.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from ganforge.api import metrics as catalogue
from ganforge.api.exit_codes import ExitCode
from ganforge.api.training_job import GANTrainingJobSpec
from ganforge.local.control_plane import free_port
from ganforge.trainer import batches, loop
from ganforge.trainer.batches import BatchSource
from ganforge.trainer.config import RuntimeOptions, TrainingOptions
from ganforge.trainer.sampler import InfiniteSampler
from tests.integration.trainer.launch import assert_identical, straight_and_extended, tiny_spec


@pytest.fixture(autouse=True)
def _cuda() -> None:
    if not torch.cuda.is_available():
        pytest.fail("no CUDA device: tests/gpu need an NVIDIA GPU", pytrace=False)


RESUME_ON_CUDA: dict[str, dict[str, Any]] = {
    "fp32": {"precision": "fp32"},
    "bf16": {"precision": "bf16"},
    # fp16 adds a GradScaler per network, whose scale and growth tracker must survive the restart.
    "fp16": {"precision": "fp16"},
    # Not with channelsLast: that pair fails on CUDA and is rejected (training_job.COMPILE_CHANNELS_LAST_ON_GPU).
    "bf16-compile": {"precision": "bf16", "compile": True},
}


@pytest.mark.parametrize("variant", list(RESUME_ON_CUDA))
def test_run_extended_after_finishing_on_cuda_is_bitwise_identical(tmp_path: Path, variant: str) -> None:
    """Deterministic mode on CUDA: stopping halfway and extending equals running straight, bit for bit."""
    training: dict[str, Any] = {**RESUME_ON_CUDA[variant], "deterministic": True}

    a, b = straight_and_extended(
        tmp_path, lambda kimg: tiny_spec(workers=1, total_kimg=kimg, training=training, resources={"gpusPerWorker": 1}),
        tmp_path / "cache", device="cuda")
    assert b["progress"]["step"] == 320 // 16
    for key in ("G_ema", "G", "D", "opt_g", "opt_d", "scaler_g", "scaler_d", "progress", "ranks"):
        assert_identical(a[key], b[key], key)
    if training["precision"] == "fp16":
        assert a["scaler_g"] and a["scaler_d"], "fp16 saved no GradScaler state"


def test_a_run_streamed_from_pinned_host_memory_equals_the_resident_run_and_resumes_bit_for_bit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dataset beyond its share of GPU memory streams from the host: batches, training and exact
    resume must be those of the resident path."""
    def spec_at(kimg: float) -> dict[str, Any]:
        return tiny_spec(workers=1, total_kimg=kimg, training={"deterministic": True},
                         resources={"gpusPerWorker": 1})

    for name in ("resident", "streamed"):
        (tmp_path / name).mkdir()
    resident, _ = straight_and_extended(tmp_path / "resident", spec_at, tmp_path / "cache", device="cuda")
    monkeypatch.setattr(batches, "DEVICE_SHARE", 0.0)  # every dataset exceeds it
    streamed, extended = straight_and_extended(tmp_path / "streamed", spec_at, tmp_path / "cache", device="cuda")
    for key in ("G_ema", "G", "D", "opt_g", "opt_d", "progress", "ranks"):
        assert_identical(streamed[key], extended[key], key)
        assert_identical(resident[key], streamed[key], key)


def test_indices_and_batches_reach_the_gpu_without_a_host_sync() -> None:
    """The per-step hot path: an epoch's indices cross once (pinned, non-blocking), resident batches
    are gathered on the device, streamed ones copied asynchronously; none of it waits for the GPU."""
    cuda = torch.device("cuda", 0)
    images = torch.randint(0, 256, (1000, 1, 16, 16), dtype=torch.uint8)
    labels = torch.arange(1000) % 10
    on_device = InfiniteSampler(1000, 0, 1, seed=3, device=cuda)
    on_host = InfiniteSampler(1000, 0, 1, seed=3)
    resident = BatchSource(images, labels, cuda, resident=True)
    streamed = BatchSource(images, labels, cuda, resident=False)
    assert not streamed.images.is_pinned()  # only each batch's staging buffer is pinned
    taken: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any synchronising call below raises
    try:
        for _ in range(40):  # 2560 indices: two epoch boundaries
            indices = on_device.next_indices(64)
            taken.append((indices, resident.take(indices, with_labels=True)[0],
                          streamed.take(on_host.next_indices(64), with_labels=True)[0]))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    reference = InfiniteSampler(1000, 0, 1, seed=3)
    for indices, from_device, from_host in taken:
        expected = reference.next_indices(64)
        assert indices.device.type == "cuda" and torch.equal(indices.cpu(), expected)
        assert torch.equal(from_device.cpu(), images[expected]) and torch.equal(from_host.cpu(), images[expected])


def test_a_cuda_run_exposes_gpu_memory_and_utilisation(tmp_path: Path) -> None:
    spec = GANTrainingJobSpec.model_validate(tiny_spec(workers=1, total_kimg=0.128, resources={"gpusPerWorker": 1}))
    port = free_port()
    options = TrainingOptions(spec, RuntimeOptions(run_dir=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"),
                                                   device="cuda", threads=1, tensorboard=False, metrics_port=port),
                              job_name="gpu")
    assert loop.train(options) == ExitCode.SUCCESS
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples = {(s.name, s.labels.get("kind", "")): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert {series for metric in catalogue.CUDA_ONLY for series in metric.series} <= {name for name, _ in samples}
    memory = {kind: samples[("ganforge_trainer_gpu_memory_bytes", kind)] for kind in ("allocated", "reserved", "peak")}
    assert 0 < memory["allocated"] <= memory["peak"] and memory["allocated"] <= memory["reserved"], memory
    assert 0.0 <= samples[("ganforge_trainer_gpu_utilization_ratio", "")] <= 1.0
