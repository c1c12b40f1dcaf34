"""Trainer throughput vs a plain single-file DCGAN loop, and checkpoint stall (background vs sync).

    python benchmarks/trainer_throughput.py [--steps 200] [--batch 64] [--threads 2] [--rounds 2]
                                            [--device cpu|cuda]

On a GPU (`--device cuda`) the configurations with compile are replaced by DEVICE_CONFIGS (compile, and
bf16 with compile): channelsLast with compile is rejected on GPUs.

The baseline is written here in the style of the PyTorch DCGAN example (DataLoader over an
in-memory dataset, BCE-with-logits, per-step .item() for logging). All loops train the same
ganforge DCGAN modules in fp32 at the same batch size, resolution and device; each round runs
the baseline and then the trainer in each of TRAINER_CONFIGS, so background load hits them alike.
The ganforge figure is the trainer's own img/s (stats.jsonl), with evaluation off and checkpoints
out of the timed window; torch.compile's compilation happens in the untimed warm-up steps.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ganforge.api.training_job import GANTrainingJobSpec, ModelSpec
from ganforge.models import build_models
from ganforge.trainer.checkpoint import CheckpointManager, LocalStorage, to_host
from ganforge.trainer.config import RuntimeOptions, TrainingOptions
from ganforge.trainer.data import load_dataset
from ganforge.trainer.loop import train

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
# spec.training overrides per trainer configuration; channelsLast is the recommended setting.
TRAINER_CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "channels_last": {"channelsLast": True},
    "channels_last_compile": {"channelsLast": True, "compile": True},
}
# Only on a GPU, where bf16 autocast runs on tensor cores. channelsLast with compile is rejected on
# GPUs (training_job.COMPILE_CHANNELS_LAST_ON_GPU), so that configuration runs on CPUs only.
DEVICE_CONFIGS: dict[str, dict[str, Any]] = {
    "compile": {"compile": True},
    "bf16_compile": {"precision": "bf16", "compile": True},
}


def _spec(args: argparse.Namespace, steps: int, training: dict[str, Any] | None = None) -> GANTrainingJobSpec:
    return GANTrainingJobSpec.model_validate({
        "dataset": {"uri": f"file://{FASHION_MNIST}", "format": "idx", "resolution": 32},
        "model": {"architecture": "dcgan", "latentDim": 100, "width": 64},
        "training": {"totalKimg": steps * args.batch / 1000, "batchSize": args.batch,
                     "reportIntervalKimg": args.warmup * args.batch / 1000, "sampleIntervalKimg": 0,
                     "optimizer": {"betas": [0.5, 0.999]}, **(training or {})},
        "resources": {"workers": 1, "gpusPerWorker": 1 if args.device == "cuda" else 0},
        "checkpoint": {"intervalKimg": 1e6},
        "evaluation": {"metrics": []},
    })


def plain_dcgan_step(net_g: nn.Module, net_d: nn.Module, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
                     criterion: nn.Module, real: torch.Tensor) -> None:
    """One step of the PyTorch-examples DCGAN loop, its per-step .item() logging included."""
    b, device = real.size(0), real.device
    net_d.zero_grad()
    output = net_d(real)
    err_d_real = criterion(output, torch.ones(b, device=device))
    err_d_real.backward()
    d_x = output.mean().item()
    noise = torch.randn(b, 100, device=device)
    fake = net_g(noise)
    output = net_d(fake.detach())
    err_d_fake = criterion(output, torch.zeros(b, device=device))
    err_d_fake.backward()
    d_g_z1 = output.mean().item()
    opt_d.step()
    net_g.zero_grad()
    output = net_d(fake)
    err_g = criterion(output, torch.ones(b, device=device))
    err_g.backward()
    d_g_z2 = output.mean().item()
    opt_g.step()
    _ = (err_d_real.item() + err_d_fake.item(), err_g.item(), d_x, d_g_z1, d_g_z2)


def baseline(args: argparse.Namespace, images: torch.Tensor) -> float:
    """The PyTorch-examples DCGAN loop; returns img/s over the timed steps."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    net_g, net_d = build_models(ModelSpec(architecture="dcgan", latent_dim=100, width=64), 32, 1, 0)
    net_g, net_d = net_g.to(device), net_d.to(device)
    dataset = torch.utils.data.TensorDataset(images.float().div(127.5).sub(1))
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch, shuffle=True, drop_last=True,
                                         pin_memory=device.type == "cuda")
    criterion = nn.BCEWithLogitsLoss()
    opt_d = torch.optim.Adam(net_d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(net_g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    step, start = 0, 0.0
    total = args.warmup + args.steps
    while step < total:
        for (real,) in loader:
            if step == args.warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
            plain_dcgan_step(net_g, net_d, opt_g, opt_d, criterion, real.to(device, non_blocking=True))
            step += 1
            if step >= total:
                break
    return args.steps * args.batch / (time.perf_counter() - start)


def ganforge_loop(args: argparse.Namespace, workdir: Path, training: dict[str, Any]) -> float:
    run_dir = workdir / f"run-{time.monotonic_ns()}"
    options = TrainingOptions(_spec(args, args.warmup + args.steps, training),
                              RuntimeOptions(run_dir=str(run_dir), cache_dir=str(workdir / "cache"),
                                             device=args.device, threads=args.threads, tensorboard=False))
    train(options)
    records = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    timed = records[1:]  # the first report covers the warm-up steps
    seconds = sum(r["timing/step_seconds"] * (args.steps / len(timed)) for r in timed)
    return args.steps * args.batch / seconds


def checkpoint_stall(args: argparse.Namespace, workdir: Path, background: bool) -> tuple[float, float]:
    """(mean stall seconds, mean write seconds) for the DCGAN state with Adam moments."""
    torch.manual_seed(0)
    g, d = build_models(ModelSpec(architecture="dcgan", latent_dim=100, width=64), 32, 1, 0)
    g, d = g.to(args.device), d.to(args.device)  # on a GPU the stall includes the copy to host memory
    opts = [torch.optim.Adam(m.parameters()) for m in (g, d)]
    for m, opt in zip((g, d), opts, strict=True):
        for p in m.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
    manager = CheckpointManager(LocalStorage(workdir / f"ckpt-{background}"), keep_last=2)
    stalls, writes = [], []
    for i in range(args.checkpoints):
        start = time.perf_counter()
        manager.wait()
        state = to_host({"G": g.state_dict(), "D": d.state_dict(), "G_ema": g.state_dict(),
                         "opt_g": opts[0].state_dict(), "opt_d": opts[1].state_dict()})
        manager.save(state, {"nimg": (i + 1) * 1000, "step": i}, {}, background=background)
        stalls.append(time.perf_counter() - start)
        if background:
            time.sleep(1.0)  # training continues meanwhile
        manager.wait()
        assert manager.newest is not None and manager.consecutive_failures == 0
        writes.append(manager.newest.write_seconds)
    return statistics.mean(stalls), statistics.mean(writes)


def _versus(ours: list[float], base: list[float]) -> dict[str, Any]:
    # Paired per round: background load varies between rounds far more than within one.
    ratios = [o / b for o, b in zip(ours, base, strict=True)]
    return {"img_per_s": [round(v, 1) for v in ours], "ratio_per_round": [round(r, 3) for r in ratios],
            "ratio_median": round(statistics.median(ratios), 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--checkpoints", type=int, default=5)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args(argv)
    configs = dict(TRAINER_CONFIGS)
    if args.device == "cuda":
        configs = {name: config for name, config in configs.items() if not config.get("compile")} | DEVICE_CONFIGS
    torch.set_num_threads(args.threads)
    images = load_dataset(_spec(args, 1).dataset).images
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        base: list[float] = []
        ours: dict[str, list[float]] = {name: [] for name in configs}
        for round_ in range(args.rounds):
            base.append(baseline(args, images))
            print(f"round {round_ + 1}: baseline {base[-1]:.1f} img/s", file=sys.stderr)
            for name, runs in ours.items():
                try:
                    runs.append(ganforge_loop(args, workdir, configs[name]))
                except Exception as error:  # one configuration failing on a device leaves the others' figures
                    print(f"round {round_ + 1}: ganforge {name} failed: {error!r}", file=sys.stderr)
                    runs.append(float("nan"))
                    continue
                print(f"round {round_ + 1}: ganforge {name} {runs[-1]:.1f} img/s", file=sys.stderr)
        torch.set_num_threads(args.threads)
        bg = checkpoint_stall(args, workdir, background=True)
        sync = checkpoint_stall(args, workdir, background=False)
    result = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "threads": args.threads,
        "batch": args.batch, "steps": args.steps,
        "load_average": os.getloadavg()[0],
        "baseline_img_per_s": [round(v, 1) for v in base],
        **{f"ganforge_{name}": _versus(runs, base) for name, runs in ours.items()},
        "checkpoint_stall_background_s": round(bg[0], 4), "checkpoint_stall_sync_s": round(sync[0], 4),
        "checkpoint_write_s": round(bg[1], 4),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
