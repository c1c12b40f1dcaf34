"""Data-parallel throughput: the ganforge trainer's gang vs PyTorch DistributedDataParallel.

    python benchmarks/data_parallel.py [--ranks 2] [--steps 150] [--warmup 20] [--batch 64] [--rounds 2]
                                       [--device cpu|cuda]

Both train the same ganforge DCGAN modules (latent 100, width 64, 32x32 Fashion-MNIST), fp32, the
same global batch split over the same ranks (gloo with one thread per rank on a CPU, NCCL with one
GPU per rank on a GPU). The baseline is the PyTorch-examples DCGAN loop with G and D wrapped in
DDP (its bucketed all_reduce overlapping backward, a DistributedSampler, per-step .item()); ganforge
is `ganforge train` as the operator runs it, one process per rank (one flat all_reduce per optimizer
step, fixed order for bitwise resume; its own img/s from stats.jsonl, warm-up excluded). Rounds
alternate the two, and ratios are taken per round.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from trainer_throughput import plain_dcgan_step  # the same baseline step, run here through DDP

from ganforge.api.training_job import DatasetSpec, ModelSpec
from ganforge.local.control_plane import free_port
from ganforge.models import build_models
from ganforge.trainer.data import load_dataset

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def _ddp_rank(rank: int, args: argparse.Namespace, port: int, result: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cuda = args.device == "cuda"
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(1)
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=args.ranks,
                            timeout=datetime.timedelta(seconds=300))
    images = load_dataset(DatasetSpec(uri=f"file://{FASHION_MNIST}", format="idx", resolution=32)).images
    torch.manual_seed(0)
    net_g, net_d = build_models(ModelSpec(architecture="dcgan", latent_dim=100, width=64), 32, 1, 0)
    ids = [rank] if cuda else None
    net_g = DistributedDataParallel(net_g.to(device), device_ids=ids)
    net_d = DistributedDataParallel(net_d.to(device), device_ids=ids)
    dataset = torch.utils.data.TensorDataset(images.float().div(127.5).sub(1))
    sampler = torch.utils.data.distributed.DistributedSampler(dataset, num_replicas=args.ranks, rank=rank)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch // args.ranks, sampler=sampler,
                                         drop_last=True, pin_memory=cuda)
    criterion = nn.BCEWithLogitsLoss()
    opt_d = torch.optim.Adam(net_d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(net_g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    step, start, epoch = 0, 0.0, 0
    total = args.warmup + args.steps
    while step < total:
        sampler.set_epoch(epoch)
        epoch += 1
        for (real,) in loader:
            if step == args.warmup:
                if cuda:
                    torch.cuda.synchronize()
                dist.barrier()
                start = time.perf_counter()
            plain_dcgan_step(net_g, net_d, opt_g, opt_d, criterion, real.to(device, non_blocking=True))
            step += 1
            if step >= total:
                break
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if rank == 0:
        result.write_text(json.dumps({"img_per_s": args.steps * args.batch / seconds}))
    dist.destroy_process_group()


def ddp(args: argparse.Namespace, workdir: Path) -> float:
    result = workdir / f"ddp-{time.monotonic_ns()}.json"
    mp.spawn(_ddp_rank, args=(args, free_port(), result), nprocs=args.ranks, join=True)
    return float(json.loads(result.read_text())["img_per_s"])


def ganforge_gang(args: argparse.Namespace, workdir: Path) -> float:
    run_dir = workdir / f"run-{time.monotonic_ns()}"
    cuda = args.device == "cuda"
    spec = {
        "dataset": {"uri": f"file://{FASHION_MNIST}", "format": "idx", "resolution": 32},
        "model": {"architecture": "dcgan", "latentDim": 100, "width": 64},
        "training": {"totalKimg": (args.warmup + args.steps) * args.batch / 1000, "batchSize": args.batch,
                     "reportIntervalKimg": args.warmup * args.batch / 1000, "sampleIntervalKimg": 0,
                     "optimizer": {"betas": [0.5, 0.999]}},
        "resources": {"workers": args.ranks, "gpusPerWorker": 1 if cuda else 0},
        "checkpoint": {"intervalKimg": 1e6},
        "evaluation": {"metrics": []},
    }
    config = workdir / "job.yaml"
    config.write_text(yaml.safe_dump({"spec": spec}))
    port = str(free_port())
    procs = []
    logs = [workdir / f"ganforge-rank{rank}.log" for rank in range(args.ranks)]
    for rank in range(args.ranks):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(args.ranks), "LOCAL_RANK": str(rank),
               "LOCAL_WORLD_SIZE": str(args.ranks), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "ganforge.cli", "train", "--config", str(config), "--run-dir", str(run_dir),
             "--cache-dir", str(workdir / "cache"), "--threads", "1", "--no-tensorboard",
             "--device", args.device], env=env, stdout=logs[rank].open("wb"), stderr=subprocess.STDOUT))
    codes = [p.wait() for p in procs]
    if codes != [0] * args.ranks:
        tails = "\n".join(log.read_text()[-3000:] for log in logs)
        raise RuntimeError(f"ganforge train exited with {codes}:\n{tails}")
    records = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    timed = records[1:]  # the first report covers the warm-up steps
    seconds = sum(r["timing/step_seconds"] * (args.steps / len(timed)) for r in timed)
    return args.steps * args.batch / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args(argv)
    base: list[float] = []
    ours: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            base.append(ddp(args, Path(tmp)))
            ours.append(ganforge_gang(args, Path(tmp)))
            print(f"round: DDP {base[-1]:.1f} img/s, ganforge {ours[-1]:.1f} img/s", file=sys.stderr)
    ratios = [o / b for o, b in zip(ours, base, strict=True)]
    print(json.dumps({
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "ranks": args.ranks,
        "global_batch": args.batch, "steps": args.steps, "ddp_img_per_s": [round(v, 1) for v in base],
        "ganforge_img_per_s": [round(v, 1) for v in ours], "ratio_per_round": [round(r, 3) for r in ratios],
        "ratio_median": round(statistics.median(ratios), 3)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
