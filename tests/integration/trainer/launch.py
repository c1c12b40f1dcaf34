"""Helpers that launch real trainer processes, one per rank, the way torchrun or Kubernetes would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from ganforge.api.exit_codes import ExitCode
from ganforge.local.control_plane import free_port
from ganforge.trainer import cli

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def tiny_spec(workers: int = 2, total_kimg: float = 1.92, **sections: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "dataset": {"uri": "fake://blobs?n=512&classes=4", "format": "fake", "resolution": 16, "conditional": True},
        "model": {"architecture": "dcgan", "latentDim": 16, "width": 8, "ema": {"halfLifeKimg": 0.5}},
        "training": {"totalKimg": total_kimg, "batchSize": 16, "reportIntervalKimg": 0.032,
                     "sampleIntervalKimg": 0.64, "seed": 7},
        "resources": {"workers": workers, "gpusPerWorker": 0},
        "checkpoint": {"intervalKimg": 0.4, "keepLast": 3},
        "evaluation": {"metrics": []},
    }
    for name, values in sections.items():
        spec[name] = {**spec.get(name, {}), **values}
    return spec


def write_spec(path: Path, spec: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"apiVersion": "ganforge.io/v1alpha1", "kind": "GANTrainingJob",
                                    "metadata": {"name": "test"}, "spec": spec}))
    return path


class Gang:
    """World-size processes of `ganforge train` with the torchrun environment contract."""

    def __init__(self, config: Path, run_dir: Path, world: int, cache_dir: Path, extra: list[str] | None = None,
                 threads: int = 1) -> None:
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        for rank in range(world):
            env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                   "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
            if world == 1:
                for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
                    env.pop(name)
            attempt = len(list(run_dir.parent.glob(f"{run_dir.name}.rank{rank}.*.log")))
            log = run_dir.parent / f"{run_dir.name}.rank{rank}.{attempt}.log"
            self.logs.append(log)
            with open(log, "wb") as out:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "ganforge.cli", "train", "--config", str(config), "--run-dir",
                     str(run_dir), "--cache-dir", str(cache_dir), "--threads", str(threads), "--no-tensorboard",
                     "--dist-timeout", "120", *(extra or [])],
                    stdout=out, stderr=subprocess.STDOUT, env=env))

    def wait(self, timeout: float = 300) -> list[int]:
        deadline = time.monotonic() + timeout
        codes = []
        for proc in self.procs:
            try:
                codes.append(proc.wait(timeout=max(1.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                for p in self.procs:
                    p.kill()
                raise AssertionError(f"trainer did not finish in {timeout}s:\n{self.output()}") from None
        return codes

    def output(self, tail: int = 4000) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-tail:]}" for log in self.logs)

    def full_output(self) -> str:
        return self.output(tail=10**9)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if any(p.poll() is not None for p in self.procs):
                raise AssertionError(f"a rank exited early:\n{self.output()}")
            time.sleep(0.02)
        raise AssertionError(f"condition not reached in {timeout}s:\n{self.output()}")


def read_progress(run_dir: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((run_dir / "progress.json").read_text()))
    except (OSError, ValueError):
        return None


def straight_and_extended(tmp_path: Path, spec_at: Callable[[float], dict[str, Any]], cache_dir: Path,
                          device: str = "cpu", total_kimg: float = 0.32) -> tuple[dict[str, Any], dict[str, Any]]:
    """The final checkpoints of a run straight to `total_kimg` and of one stopped halfway and then
    extended to it, each through `ganforge train` in this process: what exact-resume tests compare."""
    def run(run_dir: Path, kimg: float) -> None:
        # Each run compiles afresh, as its own process would: dynamo's caches (and its recompile
        # limits) outlive a run in this process.
        torch._dynamo.reset()
        config = write_spec(tmp_path / f"job-{kimg}.yaml", spec_at(kimg))
        code = cli.main(["--config", str(config), "--run-dir", str(run_dir), "--cache-dir", str(cache_dir),
                         "--threads", "1", "--no-tensorboard", "--device", device])
        assert code == ExitCode.SUCCESS

    run(tmp_path / "straight", total_kimg)
    run(tmp_path / "extended", total_kimg / 2)
    run(tmp_path / "extended", total_kimg)
    name = f"ckpt-{round(total_kimg * 1000):012d}"
    return (load_checkpoint(tmp_path / "straight" / "checkpoints" / name),
            load_checkpoint(tmp_path / "extended" / "checkpoints" / name))


def load_checkpoint(directory: Path) -> dict[str, Any]:
    state: dict[str, Any] = torch.load(directory / "state.pt", map_location="cpu", weights_only=True)
    return state


def assert_identical(a: Any, b: Any, path: str = "") -> None:
    """Bitwise equality of two state trees, naming the first leaf that differs."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), f"{path} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"{path}: keys differ"
        for key in a:
            assert_identical(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), f"{path}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"
