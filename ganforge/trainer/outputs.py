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
    """Metrics on http://:<port>/metrics; a private registry so tests can create several."""

    def __init__(self, port: int, labels: dict[str, str]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

        self.registry = CollectorRegistry()
        names = sorted(labels)
        self._labels = labels

        def gauge(name: str, doc: str, extra: tuple[str, ...] = ()) -> Any:
            return Gauge(name, doc, [*names, *extra], registry=self.registry)

        self.kimg = gauge("ganforge_trainer_kimg", "Thousands of real images seen")
        self.step = gauge("ganforge_trainer_step", "Generator updates")
        self.step_seconds = gauge("ganforge_trainer_step_seconds", "Mean wall time per step since last report")
        self.images_per_second = gauge("ganforge_trainer_images_per_second", "Training throughput, all ranks")
        self.loss = gauge("ganforge_trainer_loss", "Mean loss since last report", ("network",))
        self.grad_norm = gauge("ganforge_trainer_grad_norm", "Mean global gradient L2 norm", ("network",))
        self.d_output = gauge("ganforge_trainer_d_output_mean", "Mean D output on real/fake", ("input",))
        self.checkpoint_seconds = Histogram(
            "ganforge_trainer_checkpoint_seconds", "Checkpoint time by phase (stall = training paused)",
            [*names, "phase"], registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120),
        )
        self.checkpoint_failures = Counter(
            "ganforge_trainer_checkpoint_failures", "Failed checkpoint writes", names, registry=self.registry
        )
        self.last_checkpoint_kimg = gauge("ganforge_trainer_last_checkpoint_kimg", "Progress in the newest checkpoint")
        self.evaluation = gauge("ganforge_trainer_evaluation", "Newest evaluation metric", ("metric",))
        self.last_evaluation_kimg = gauge("ganforge_trainer_last_evaluation_kimg", "Progress at the newest evaluation")
        self.port = port
        if port > 0:
            start_http_server(port, registry=self.registry)
            log.info("Prometheus metrics on :%d/metrics", port)

    def _l(self, **extra: str) -> dict[str, str]:
        return {**self._labels, **extra}

    def report(self, stats: dict[str, float], kimg: float, step: int) -> None:
        self.kimg.labels(**self._l()).set(kimg)
        self.step.labels(**self._l()).set(step)
        self.step_seconds.labels(**self._l()).set(stats["timing/step_seconds"])
        self.images_per_second.labels(**self._l()).set(stats["timing/images_per_second"])
        for net in ("G", "D"):
            self.loss.labels(**self._l(network=net)).set(stats[f"loss/{net}"])
            self.grad_norm.labels(**self._l(network=net)).set(stats[f"grad_norm/{net}"])
        self.d_output.labels(**self._l(input="real")).set(stats["d_output/real"])
        self.d_output.labels(**self._l(input="fake")).set(stats["d_output/fake"])

    def checkpoint(self, phase: str, seconds: float) -> None:
        self.checkpoint_seconds.labels(**self._l(phase=phase)).observe(seconds)

    def checkpoint_written(self, info: CheckpointInfo) -> None:
        self.checkpoint("write", info.write_seconds)
        self.last_checkpoint_kimg.labels(**self._l()).set(info.kimg)

    def checkpoint_failed(self) -> None:
        self.checkpoint_failures.labels(**self._l()).inc()

    def evaluated(self, metrics: dict[str, float], kimg: float) -> None:
        for name, value in metrics.items():
            self.evaluation.labels(**self._l(metric=name)).set(value)
        self.last_evaluation_kimg.labels(**self._l()).set(kimg)
