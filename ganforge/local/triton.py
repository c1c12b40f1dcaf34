"""The tritonserver of `make tools` as a plain process on this machine, for one prepared model
directory: what the benchmarks and the serving tests call, outside any cluster."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ganforge.local import tools
from ganforge.local.control_plane import free_port

CPU_FLAGS = ["--disable-auto-complete-config", "--pinned-memory-pool-byte-size=0", "--cuda-memory-pool-byte-size=0:0",
             "--allow-gpu-metrics=false"]


@dataclass(frozen=True)
class TritonProcess:
    process: subprocess.Popen[bytes]
    url: str  # host:port, HTTP (KServe v2)
    metrics_url: str  # Prometheus endpoint
    log: Path


@contextmanager
def triton_serving(model_dir: Path, ready_timeout: float = 120,
                   backend_directory: Path | None = None) -> Iterator[TritonProcess]:
    """tritonserver in explicit model-control mode with only `model_dir` (its name is the model's)
    loaded, ready when the model is; stopped on exit. Its log is `<model_dir>.triton.log`.
    `backend_directory`: where Triton looks for backends instead of its own (one with an
    `onnxruntime/` backend serves the cluster profile; the PyPI tritonserver has none)."""
    http, grpc, metrics = free_port(), free_port(), free_port()
    log_path = model_dir.with_name(f"{model_dir.name}.triton.log")
    backends = [f"--backend-directory={backend_directory}"] if backend_directory is not None else []
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(tools.tool_path("tritonserver")), f"--model-repository={model_dir.parent}",
             "--model-control-mode=explicit", f"--load-model={model_dir.name}", f"--http-port={http}",
             f"--grpc-port={grpc}", f"--metrics-port={metrics}", *CPU_FLAGS, *backends],
            stdout=log, stderr=subprocess.STDOUT)
    served = TritonProcess(process, f"127.0.0.1:{http}", f"http://127.0.0.1:{metrics}/metrics", log_path)
    try:
        _wait_ready(served, model_dir.name, ready_timeout)
        yield served
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(served: TritonProcess, model: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if served.process.poll() is not None:
            tail = served.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"tritonserver exited ({served.process.returncode}):\n{tail}")
        try:
            with urllib.request.urlopen(f"http://{served.url}/v2/models/{model}/ready", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"tritonserver did not report model {model} ready in {timeout:.0f} s")
