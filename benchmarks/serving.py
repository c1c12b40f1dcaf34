"""Serving the generator: Triton (local profile) vs onnxruntime direct vs torch eager, side by side.

One run, one model (the example's DCGAN: latent 64, width 32, 32x32x1, unconditional, random
weights: speed does not depend on them), one machine. For batch 1 and 64 and 1 and 4 concurrent
clients, every backend serves the same requests for the same wall time; reported are images/s,
p50 and p95 request latency, and ratios against onnxruntime direct.

- onnxruntime direct: one InferenceSession (1 intra-op thread) shared by the client threads, in
  this process: the floor of what any server around the same file can do.
- Triton: the real tritonserver of `make tools` (python backend running the same model.onnx through
  onnxruntime), as a separate process, called over HTTP (KServe v2) with ganforge's own client
  (`GeneratorClient`, what analysis pods and `ganforge generate` use) and, as a second row, with
  `tritonclient.http`; dynamic batching on; instances = cores, 1 thread each, so it gets the CPU
  the direct session's client threads get. Clients and server share this machine's cores, so a
  client's own CPU cost shows in the server's throughput.
- torch eager: the PyTorch module itself, 1 intra-op thread, called from the client threads.

    python benchmarks/serving.py --seconds 5 --rounds 5
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tritonclient.http as triton_http

from ganforge.api.inference_service import TritonProfile, TritonSpec
from ganforge.api.training_job import ModelSpec
from ganforge.local.triton import triton_serving
from ganforge.models import build_generator
from ganforge.serving.client import GeneratorClient
from ganforge.serving.export import PARITY_BOUNDS, to_onnx
from ganforge.serving.model_repository import ModelFacts, prepare_model_directory, write_revision


@dataclass
class Measurement:
    images_per_second: float
    p50_ms: float
    p95_ms: float
    requests: int
    client_cpu_ms: float  # CPU time of this process (the clients, or the in-process model) per request
    server_cpu_ms: float  # CPU time of the server's processes per request (0 for in-process backends)


def process_tree(root: int) -> list[int]:
    """`root` and its descendants (tritonserver starts one python-backend stub per model instance)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(parent, []).append(int(entry))
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(parents.get(pid, []))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the processes, from /proc (Linux)."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def measure(call: Callable[[np.ndarray], np.ndarray], batch: int, clients: int, seconds: float,
            latent_dim: int, server_pids: list[int] | None = None) -> Measurement:
    latencies: list[list[float]] = [[] for _ in range(clients)]
    stop = time.perf_counter() + seconds
    errors: list[BaseException] = []

    def client(index: int) -> None:
        z = np.random.default_rng(index).standard_normal((batch, latent_dim)).astype(np.float32)
        try:
            while time.perf_counter() < stop:
                start = time.perf_counter()
                out = call(z)
                latencies[index].append(time.perf_counter() - start)
                assert out.shape[0] == batch
        except BaseException as error:  # surfaced after the threads join
            errors.append(error)

    began = time.perf_counter()
    client_cpu, server_cpu = time.process_time(), cpu_seconds(server_pids or [])
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    client_cpu, server_cpu = time.process_time() - client_cpu, cpu_seconds(server_pids or []) - server_cpu
    if errors:
        raise errors[0]
    every = sorted(x for per_client in latencies for x in per_client)
    quantiles = statistics.quantiles(every, n=100)
    return Measurement(len(every) * batch / wall, quantiles[49] * 1000, quantiles[94] * 1000, len(every),
                       client_cpu / len(every) * 1000, server_cpu / len(every) * 1000)


LOCAL = "Triton (local profile)"
NATIVE = "Triton (cluster profile, native onnxruntime backend)"


def ganforge_client(url: str) -> Callable[[np.ndarray], np.ndarray]:
    """Calls through `GeneratorClient`, one keep-alive connection per client thread, as a real client keeps one."""
    local = threading.local()

    def call(z: np.ndarray) -> np.ndarray:
        if not hasattr(local, "client"):
            local.client = GeneratorClient(url, "bench")
        return local.client.generate(z)

    return call


def reference_client(url: str) -> Callable[[np.ndarray], np.ndarray]:
    """Calls through `tritonclient.http`, one client per thread."""
    local = threading.local()

    def call(z: np.ndarray) -> np.ndarray:
        if not hasattr(local, "client"):
            local.client = triton_http.InferenceServerClient(url=url)
        request = triton_http.InferInput("z", list(z.shape), "FP32")
        request.set_data_from_numpy(z)
        out: np.ndarray = local.client.infer("bench", [request]).as_numpy("image")
        return out

    return call


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="wall time per backend and setting")
    parser.add_argument("--rounds", type=int, default=3,
                        help="each cell runs every backend once per round; ratios are per round, then the median")
    parser.add_argument("--instances", type=int, default=0, help="Triton model instances (default: one per core)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--max-batch", type=int, default=64, help="Triton max_batch_size (the example service's)")
    parser.add_argument("--native-backend", type=Path,
                        help="a Triton backend directory holding onnxruntime/libtriton_onnxruntime.so: adds "
                             "the cluster profile (platform onnxruntime_onnx) served by it "
                             "(hack/triton-onnxruntime-backend.sh builds one)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cores = os.cpu_count() or 1
    facts = ModelFacts(latent_dim=64, num_classes=0, channels=1, resolution=32)
    torch.manual_seed(0)
    generator = build_generator(ModelSpec(latent_dim=64, width=32), 32, 1, 0).eval()
    onnx_bytes = to_onnx(generator, facts, 17).SerializeToString()

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])

    def direct(z: np.ndarray) -> np.ndarray:
        out: np.ndarray = session.run(["image"], {"z": z})[0]
        return out

    def eager(z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out: np.ndarray = generator(torch.from_numpy(z)).numpy()
        return out

    with tempfile.TemporaryDirectory() as scratch, contextlib.ExitStack() as running:
        root = Path(scratch)
        serving = TritonSpec(max_batch_size=args.max_batch, instances=args.instances or cores, threads=1,
                             max_queue_delay_microseconds=1000)
        profiles: dict[str, tuple[TritonProfile, Path | None]] = {LOCAL: ("python-onnxruntime", None)}
        if args.native_backend is not None:
            profiles[NATIVE] = ("onnxruntime", args.native_backend)
        backends: dict[str, Callable[[np.ndarray], np.ndarray]] = {"onnxruntime direct": direct}
        server_pids: dict[str, list[int]] = {}
        for name, (profile, backend_directory) in profiles.items():
            revision = write_revision(root / profile / "repository", onnx_bytes, facts, {}, {}, profile)
            model_dir = root / profile / "models" / "bench"
            prepare_model_directory(revision.path, revision.sha256, model_dir, profile, serving)
            served = running.enter_context(triton_serving(model_dir, backend_directory=backend_directory))
            backends[name] = ganforge_client(served.url)
            server_pids[name] = process_tree(served.process.pid)
            if name == LOCAL:
                backends["Triton, tritonclient"] = reference_client(served.url)
                server_pids["Triton, tritonclient"] = server_pids[name]
        backends["torch eager"] = eager
        # Every server answers what onnxruntime computes, before any of them is timed.
        z = np.random.default_rng(0).standard_normal((args.max_batch, facts.latent_dim), dtype=np.float32)
        for name, call in backends.items():
            difference = float(np.abs(call(z) - direct(z)).max())
            print(f"{name}: max |output - onnxruntime direct| = {difference:.2g}")
            if difference > PARITY_BOUNDS["fp32"]:
                raise SystemExit(f"{name} does not compute what onnxruntime does (max difference {difference:.2g})")
        print(f"\n{cores} cores; {args.seconds:g} s per cell and backend, {args.rounds} rounds (medians); "
              "DCGAN latent 64, width 32, 32x32x1\n")
        print("| batch | clients | backend | img/s | p50 ms | p95 ms | img/s vs ORT (per-round ratios) "
              "| CPU ms/request: clients + server |")
        print("|---:|---:|---|---:|---:|---:|---:|---:|")
        for batch in args.batches:
            for clients in (1, 4):
                rounds = [{name: measure(call, batch, clients, args.seconds, facts.latent_dim,
                                         server_pids.get(name))
                           for name, call in backends.items()} for _ in range(args.rounds)]
                for name in backends:
                    runs = [one[name] for one in rounds]
                    ratios = [one[name].images_per_second / one["onnxruntime direct"].images_per_second
                              for one in rounds]
                    print(f"| {batch} | {clients} | {name} | "
                          f"{statistics.median(r.images_per_second for r in runs):.0f} | "
                          f"{statistics.median(r.p50_ms for r in runs):.2f} | "
                          f"{statistics.median(r.p95_ms for r in runs):.2f} | "
                          f"**{statistics.median(ratios):.2f}x** ({' / '.join(f'{x:.2f}' for x in ratios)}) | "
                          f"{statistics.median(r.client_cpu_ms for r in runs):.2f} + "
                          f"{statistics.median(r.server_cpu_ms for r in runs):.2f} |",
                          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
