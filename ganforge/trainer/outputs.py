"""What a run leaves behind (rank 0 only): sample grids, JSONL logs, TensorBoard events,
Prometheus metrics and progress reports for the operator."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ganforge.evaluation.images import atomic_write_bytes
from ganforge.trainer.checkpoint import CheckpointInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProgressEvent:
    """What the operator needs for GANTrainingJob.status (progress, checkpoint, metrics)."""

    kimg: float
    step: int
    images_per_second: float
    total_kimg: float
    checkpoint: CheckpointInfo | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    state: str = "running"  # running | finished | preempted | failed
    # Where this process resumed from (the checkpoint it loaded); None when it started fresh.
    resumed_from_kimg: float | None = None
    resumed_from_step: int | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        if self.checkpoint is not None:
            out["checkpoint"] = {**asdict(self.checkpoint), "kimg": self.checkpoint.kimg}
        out["time"] = time.time()
        return out


class ProgressHook(Protocol):
    def __call__(self, event: ProgressEvent) -> None: ...


class FileProgressHook:
    """Default hook: <run dir>/progress.json, replaced atomically so readers never see half a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, event: ProgressEvent) -> None:
        atomic_write_bytes(self.path, (json.dumps(event.to_json(), indent=2) + "\n").encode())


class JsonlWriter:
    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
            handle.flush()


class TensorBoardWriter:
    def __init__(self, log_dir: Path) -> None:
        self._writer: Any = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(log_dir))
        except Exception as error:  # tensorboard is optional at runtime
            log.warning("TensorBoard disabled: %s", error)

    def scalars(self, values: dict[str, float], nimg: int) -> None:
        if self._writer is None:
            return
        for name, value in values.items():
            self._writer.add_scalar(name, value, global_step=nimg)
        self._writer.flush()

    def image(self, tag: str, grid: Any, nimg: int) -> None:
        """A uint8 [C, H, W] image (the sample grid), on the scalars' step axis (images shown)."""
        if self._writer is None:
            return
        self._writer.add_image(tag, grid, global_step=nimg, dataformats="CHW")
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


class PrometheusExporter:
    """Rank 0's metrics on http://:<port>/metrics (names in ganforge.api.metrics); a private
    registry so tests can create several."""

    def __init__(self, port: int, job_name: str, checkpoint_interval_kimg: float, device: Any = None,
                 world_size: int = 1) -> None:
        from prometheus_client import CollectorRegistry

        from ganforge.api import metrics as catalogue
        from ganforge.api.metrics import build_version, collector

        self.registry = CollectorRegistry()
        self._labels = {"job_name": job_name}

        def make(metric: catalogue.Metric) -> Any:
            return collector(metric, self.registry)

        make(catalogue.BUILD_INFO).labels("trainer", build_version()).set(1)
        self.kimg = make(catalogue.TRAINER_KIMG)
        self.step = make(catalogue.TRAINER_STEP)
        self.step_seconds = make(catalogue.TRAINER_STEP_SECONDS)
        self.step_phase_seconds = make(catalogue.TRAINER_STEP_PHASE_SECONDS)
        self.images_per_second = make(catalogue.TRAINER_IMAGES_PER_SECOND)
        self.loss = make(catalogue.TRAINER_LOSS)
        self.grad_norm = make(catalogue.TRAINER_GRAD_NORM)
        self.d_output = make(catalogue.TRAINER_D_OUTPUT)
        self.checkpoint_seconds = make(catalogue.TRAINER_CHECKPOINT_SECONDS)
        self.checkpoint_failures = make(catalogue.TRAINER_CHECKPOINT_FAILURES)
        self.checkpoint_failures.labels(**self._l())  # zero until the first failure, so rate() sees it
        self.last_checkpoint_kimg = make(catalogue.TRAINER_LAST_CHECKPOINT_KIMG)
        self.last_checkpoint_time = make(catalogue.TRAINER_LAST_CHECKPOINT_TIMESTAMP)
        make(catalogue.TRAINER_CHECKPOINT_INTERVAL).labels(**self._l()).set(checkpoint_interval_kimg)
        self.evaluation = make(catalogue.TRAINER_EVALUATION)
        device_type = getattr(device, "type", "cpu")
        self.device_seconds = make(catalogue.TRAINER_DEVICE_SECONDS).labels(**self._l(device=device_type))
        self._devices = world_size
        self.last_evaluation_kimg = make(catalogue.TRAINER_LAST_EVALUATION_KIMG)
        self._device = device if device is not None and getattr(device, "type", "") == "cuda" else None
        if self._device is not None:
            self.gpu_memory = make(catalogue.TRAINER_GPU_MEMORY)
            self.gpu_utilization = make(catalogue.TRAINER_GPU_UTILIZATION)
        self.port = port
        if port > 0:
            from prometheus_client import start_http_server

            start_http_server(port, registry=self.registry)
            log.info("Prometheus metrics on :%d/metrics", port)

    def _l(self, **extra: str) -> dict[str, str]:
        return {**self._labels, **extra}

    def report(self, stats: dict[str, float], kimg: float, step: int, seconds: float) -> None:
        """One report's statistics; `seconds` of wall time since the last one."""
        self.device_seconds.inc(seconds * self._devices)
        self.kimg.labels(**self._l()).set(kimg)
        self.step.labels(**self._l()).set(step)
        self.step_seconds.labels(**self._l()).set(stats["timing/step_seconds"])
        for phase in ("data", "compute", "communication"):
            self.step_phase_seconds.labels(**self._l(phase=phase)).set(stats[f"timing/{phase}_seconds"])
        self.images_per_second.labels(**self._l()).set(stats["timing/images_per_second"])
        for net in ("G", "D"):
            self.loss.labels(**self._l(network=net)).set(stats[f"loss/{net}"])
            self.grad_norm.labels(**self._l(network=net)).set(stats[f"grad_norm/{net}"])
        self.d_output.labels(**self._l(input="real")).set(stats["d_output/real"])
        self.d_output.labels(**self._l(input="fake")).set(stats["d_output/fake"])
        if self._device is not None:
            self._gpu()

    def _gpu(self) -> None:
        import torch

        memory = {"allocated": torch.cuda.memory_allocated(self._device),
                  "reserved": torch.cuda.memory_reserved(self._device),
                  "peak": torch.cuda.max_memory_allocated(self._device)}
        for kind, value in memory.items():
            self.gpu_memory.labels(**self._l(kind=kind)).set(value)
        try:  # needs NVML (the nvidia-ml-py package); memory is reported without it
            self.gpu_utilization.labels(**self._l()).set(torch.cuda.utilization(self._device) / 100)
        except Exception:
            pass

    def checkpoint(self, phase: str, seconds: float) -> None:
        self.checkpoint_seconds.labels(**self._l(phase=phase)).observe(seconds)

    def checkpoint_written(self, info: CheckpointInfo) -> None:
        self.checkpoint("write", info.write_seconds)
        self.last_checkpoint_kimg.labels(**self._l()).set(info.kimg)
        self.last_checkpoint_time.labels(**self._l()).set(_unix_time(info.created))

    def resumed_from(self, info: CheckpointInfo) -> None:
        """A new gang's checkpoint before its first write: the one it resumed from, and the resume as the
        time from which its work is at risk (the wait for the gang is not work a preemption could lose),
        so the checkpoint's age is there to alert on, and a long wait to be scheduled does not page."""
        self.last_checkpoint_kimg.labels(**self._l()).set(info.kimg)
        self.last_checkpoint_time.labels(**self._l()).set(max(_unix_time(info.created), time.time()))

    def checkpoint_failed(self) -> None:
        self.checkpoint_failures.labels(**self._l()).inc()

    def evaluated(self, metrics: dict[str, float], kimg: float) -> None:
        for name, value in metrics.items():
            self.evaluation.labels(**self._l(metric=name)).set(value)
        self.last_evaluation_kimg.labels(**self._l()).set(kimg)


def _unix_time(rfc3339: str) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time()
