"""Several ranks per pod: two "pods" (`ganforge train` with the PET_ layout the operator gives a
pod with processesPerWorker 2) run four ranks; a SIGTERM to one pod stops all four at one step, and
the resumed run ends bitwise where four plain ranks end without a stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ganforge.api.exit_codes import ExitCode
from ganforge.local.control_plane import free_port
from ganforge.trainer.checkpoint import checkpoint_name
from tests.integration.trainer.launch import (
    Gang,
    assert_identical,
    load_checkpoint,
    read_progress,
    tiny_spec,
    write_spec,
)

TOTAL_KIMG = 0.96  # 60 steps of 16 images, 4 per rank


def _pods(config: Path, run_dir: Path, cache_dir: Path, attempt: int) -> list[subprocess.Popen[bytes]]:
    port = str(free_port())
    pods = []
    for node_rank in range(2):
        env = {key: value for key, value in os.environ.items()
               if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
        env.update({"PET_NPROC_PER_NODE": "2", "PET_NNODES": "2", "PET_NODE_RANK": str(node_rank),
                    "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": port})
        log = run_dir.parent / f"pod{node_rank}.{attempt}.log"
        with open(log, "wb") as out:
            pods.append(subprocess.Popen(
                [sys.executable, "-m", "ganforge.cli", "train", "--config", str(config), "--run-dir", str(run_dir),
                 "--cache-dir", str(cache_dir), "--threads", "1", "--no-tensorboard", "--dist-timeout", "120"],
                stdout=out, stderr=subprocess.STDOUT, env=env))
    return pods


def _logs(run_dir: Path, attempt: int) -> str:
    return "\n".join((run_dir.parent / f"pod{n}.{attempt}.log").read_text(errors="replace")[-6000:] for n in range(2))


def _wait(pods: list[subprocess.Popen[bytes]], run_dir: Path, attempt: int) -> list[int]:
    try:
        return [pod.wait(timeout=300) for pod in pods]
    except subprocess.TimeoutExpired:
        for pod in pods:
            pod.kill()
        raise AssertionError(_logs(run_dir, attempt)) from None


def test_two_ranks_per_pod_preempt_together_and_resume_bitwise(tmp_path: Path, cache_dir: Path) -> None:
    spec = tiny_spec(workers=2, total_kimg=TOTAL_KIMG, resources={"processesPerWorker": 2})
    config = write_spec(tmp_path / "job.yaml", spec)

    plain = tiny_spec(workers=4, total_kimg=TOTAL_KIMG)  # the same 4 ranks, one process each
    straight = Gang(write_spec(tmp_path / "plain.yaml", plain), tmp_path / "straight", 4, cache_dir)
    assert straight.wait() == [0, 0, 0, 0], straight.output()

    run_dir = tmp_path / "pods"
    run_dir.mkdir()
    pods = _pods(config, run_dir, cache_dir, attempt=0)
    deadline = time.monotonic() + 180
    while (read_progress(run_dir) or {}).get("step", 0) < 12:
        assert all(pod.poll() is None for pod in pods), _logs(run_dir, 0)
        assert time.monotonic() < deadline, _logs(run_dir, 0)
        time.sleep(0.05)
    pods[1].send_signal(signal.SIGTERM)  # the kubelet stops pod 1: its launcher forwards it to ranks 2 and 3
    assert _wait(pods, run_dir, 0) == [ExitCode.PREEMPTED, ExitCode.PREEMPTED], _logs(run_dir, 0)
    log = _logs(run_dir, 0)
    assert "started ranks 2-3 of 4 on this pod" in log
    assert "world size 4" in log
    progress = read_progress(run_dir)
    assert progress is not None and progress["state"] == "preempted"
    stopped_nimg = round(progress["kimg"] * 1000)
    emergency = load_checkpoint(run_dir / "checkpoints" / checkpoint_name(stopped_nimg))
    assert len(emergency["ranks"]) == 4

    pods = _pods(config, run_dir, cache_dir, attempt=1)
    assert _wait(pods, run_dir, 1) == [0, 0], _logs(run_dir, 1)
    final = checkpoint_name(round(TOTAL_KIMG * 1000))
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / final)
    b = load_checkpoint(run_dir / "checkpoints" / final)
    for key in ("G_ema", "G", "D", "opt_g", "opt_d", "progress", "ranks"):
        assert_identical(a[key], b[key], key)


def test_a_failing_rank_fails_its_pod_with_its_own_exit_code(tmp_path: Path, cache_dir: Path) -> None:
    """A bad dataset fails every rank alike; the pod reports DATA_ERROR, not a generic failure."""
    spec = tiny_spec(workers=1, resources={"processesPerWorker": 2})
    spec["dataset"] = {"uri": str(tmp_path / "missing"), "format": "npz", "resolution": 16}
    config = write_spec(tmp_path / "job.yaml", spec)
    env = {key: value for key, value in os.environ.items() if key != "RANK"}
    env.update({"PET_NPROC_PER_NODE": "2", "PET_NNODES": "1", "PET_NODE_RANK": "0", "PET_MASTER_ADDR": "127.0.0.1",
                "PET_MASTER_PORT": str(free_port())})
    result = subprocess.run(
        [sys.executable, "-m", "ganforge.cli", "train", "--config", str(config), "--run-dir", str(tmp_path / "run"),
         "--cache-dir", str(cache_dir), "--threads", "1", "--no-tensorboard", "--dist-timeout", "60"],
        env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == ExitCode.DATA_ERROR, result.stdout + result.stderr
