"""Small data: a DCGAN trained on 2k Fashion-MNIST images without augmentation of D's inputs, with it
always applied, and with ADA's adaptive probability, at equal kimg, judged against the whole
training set.

    python benchmarks/small_data_augment.py [--images 2000] [--kimg 384] [--every 64] [--width 32]
                                            [--threads 2] [--device cpu|cuda]
                                            [--policy translation,cutout] [--xflip]
                                            [--work DIR] [--train-only no-augmentation|augmented|adaptive]
                                            [--rescore DIR] [--cache DIR]

The runs can train in parallel (one process each with `--work DIR --train-only NAME`) and be scored
together afterwards (`--rescore DIR`, which scores the runs it finds); `--cache` shares the domain
classifier between work directories.

All runs train the same model from the same seed on the same 2000 images (a seeded subset, as an
npz); they differ only in spec.training.augment. Every `--every` kimg a checkpoint is kept, and each
one's EMA generator is scored afterwards with FD in the domain classifier's space against all 60k
training images (classifier and reference statistics from the full set, 5000 samples per point),
so the figure says how well each generator matches the real distribution, not the 2000 images.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganforge.api.training_job import DatasetSpec, EvaluationSpec, GANTrainingJobSpec
from ganforge.evaluation.features import extract
from ganforge.evaluation.memorization import MemorizationReference
from ganforge.models import build_models
from ganforge.trainer.config import RuntimeOptions, TrainingOptions
from ganforge.trainer.data import load_dataset
from ganforge.trainer.evaluation_suite import EvaluationSuite, build_suite
from ganforge.trainer.loop import train

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def _spec(data: Path, args: argparse.Namespace, augment: dict[str, Any] | None) -> GANTrainingJobSpec:
    return GANTrainingJobSpec.model_validate({
        "dataset": {"uri": str(data), "format": "npz", "resolution": 32},
        "model": {"architecture": "dcgan", "latentDim": 64, "width": args.width, "ema": {"halfLifeKimg": 2}},
        "training": {"totalKimg": args.kimg, "batchSize": 64, "reportIntervalKimg": args.every,
                     "sampleIntervalKimg": args.every, "seed": 3, **({"augment": augment} if augment else {})},
        "resources": {"workers": 1, "gpusPerWorker": 1 if args.device == "cuda" else 0},
        "checkpoint": {"intervalKimg": args.every, "keepLast": 1000, "background": False},
        "evaluation": {"metrics": []},
    })


VARIANTS = ("no augmentation", "augmented", "adaptive")


def _augment(name: str, policy: dict[str, Any]) -> dict[str, Any] | None:
    """Each variant's spec.training.augment: none; the policy always applied; the policy applied
    with ADA's adaptive probability (starting at 0, target 0.6, 500 kimg from 0 to 1)."""
    return {"no augmentation": None, "augmented": policy, "adaptive": {**policy, "adaptive": {}}}[name]


def _score(run_dir: Path, spec: GANTrainingJobSpec, args: argparse.Namespace, suite: EvaluationSuite,
           memorization: MemorizationReference) -> list[tuple[float, float, float]]:
    """(kimg, FD against the whole training set, memorisation against the small one) per checkpoint."""
    points = []
    device = torch.device(args.device)
    generator, _ = build_models(spec.model, 32, 1, 0)
    generator.to(device)
    # Checkpoints fall on step boundaries: score the ones the run kept rather than computing names.
    for directory in sorted((run_dir / "checkpoints").glob("ckpt-*")):
        nimg = int(directory.name.removeprefix("ckpt-"))
        state = torch.load(directory / "state.pt", weights_only=True, map_location=device)
        generator.load_state_dict(state["G_ema"])
        images, _ = suite.generate(generator.eval(), 64, 0, device, seed=0)
        fd = suite.evaluate(generator, 64, 0, device, seed=0).metrics["fd_domain"]
        assert suite.classifier is not None
        memorized = memorization.score(extract(suite.classifier, images).numpy())["memorization"]
        points.append((nimg / 1000, fd, memorized))
    return points


def _train(name: str, spec: GANTrainingJobSpec, work: Path, args: argparse.Namespace) -> None:
    start = time.perf_counter()
    options = TrainingOptions(spec, RuntimeOptions(run_dir=str(work / name.replace(" ", "-")),
                                                   cache_dir=str(work / "cache"), device=args.device,
                                                   threads=args.threads, tensorboard=False))
    code = train(options)
    assert int(code) == 0, f"{name}: exit code {code}"
    print(f"{name}: trained {args.kimg} kimg in {time.perf_counter() - start:.0f}s", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--kimg", type=float, default=384.0)
    parser.add_argument("--every", type=float, default=64.0)
    parser.add_argument("--width", type=int, default=32, help="spec.model.width (G and D)")
    parser.add_argument("--policy", default="translation,cutout", help="spec.training.augment.policy, comma-separated")
    # Off by default: Fashion-MNIST's shoes all face one way, and flips teach G mirrored ones.
    parser.add_argument("--xflip", action="store_true", help="augment with x-flips too")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--work", type=Path, help="work directory (default: a new temporary one)")
    parser.add_argument("--train-only", choices=[v.replace(" ", "-") for v in VARIANTS],
                        help="train this run into --work and score nothing")
    parser.add_argument("--rescore", type=Path, help="score the runs in this work directory again; train nothing")
    parser.add_argument("--cache", type=Path, help="domain classifier cache (default: WORK/cache)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    full = load_dataset(DatasetSpec(uri=f"file://{FASHION_MNIST}", format="idx", resolution=32))
    work = args.rescore or args.work or Path(tempfile.mkdtemp(prefix="ganforge-small-data-"))
    work.mkdir(parents=True, exist_ok=True)
    picked = torch.randperm(len(full), generator=torch.Generator().manual_seed(0))[: args.images]
    data = work / "subset.npz"
    assert full.labels is not None and full.held_out is not None
    # Through a private name and a rename: runs training in parallel write the same subset at once.
    partial = work / f"subset.{os.getpid()}.npz"
    np.savez(partial, images=full.images[picked, 0].numpy(), labels=full.labels[picked].numpy())
    partial.replace(data)
    augment_spec = {"policy": [p for p in args.policy.split(",") if p], "xflip": args.xflip}
    if args.train_only:
        name = args.train_only.replace("-", " ")
        _train(name, _spec(data, args, _augment(name, augment_spec)), work, args)
        return 0

    suite = build_suite(EvaluationSpec(num_samples=args.samples, feature_extractors=["domain"], metrics=["fd"]),
                        full, args.cache or work / "cache", torch.device(args.device))
    assert suite.classifier is not None
    # Memorisation of the small training set, with the unseen test split as the real yardstick.
    memorization = MemorizationReference.build(extract(suite.classifier, full.images[picked]).numpy(),
                                               extract(suite.classifier, full.held_out).numpy())
    results: dict[str, list[tuple[float, float, float]]] = {}
    rates: dict[str, float] = {}
    variants = [v for v in VARIANTS if args.rescore is None or (work / v.replace(" ", "-")).is_dir()]
    for name in variants:
        spec = _spec(data, args, _augment(name, augment_spec))
        run_dir = work / name.replace(" ", "-")
        if args.rescore is None:
            _train(name, spec, work, args)
        stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
        rates[name] = float(np.median([s["timing/images_per_second"] for s in stats]))
        results[name] = _score(run_dir, spec, args, suite, memorization)

    print(f"\naugmentation {augment_spec}; {args.images} training images. FD: domain features, {args.samples} "
          f"samples vs all {len(full)} training images (lower is better). Memorisation: the share of samples closer "
          f"to one of the {args.images} training images than 95% of unseen test images come (0.05 = as novel as "
          "real data):\n")
    others = [v for v in variants if v != "no augmentation"]
    print("| kimg | FD, no augmentation | " + " | ".join(f"FD, {v} | FD ratio, {v}" for v in others)
          + " | memorisation, " + ", ".join(variants) + " |")
    print("|---:|---:|" + "---:|---:|" * len(others) + "---:|")
    # A run cut short (a time limit) is compared where every run has a checkpoint.
    scored = {v: {kimg: (fd, mem) for kimg, fd, mem in results[v]} for v in others}
    for kimg, fd_plain, mem_plain in results["no augmentation"]:
        if any(kimg not in scored[v] for v in others):
            continue
        cells = " | ".join(f"{scored[v][kimg][0]:.1f} | {scored[v][kimg][0] / fd_plain:.2f}x" for v in others)
        memorised = " / ".join(f"{m:.3f}" for m in [mem_plain, *(scored[v][kimg][1] for v in others)])
        print(f"| {kimg:g} | {fd_plain:.1f} | {cells} | {memorised} |")
    for name in variants:
        stats = [json.loads(line) for line in (work / name.replace(" ", "-") / "stats.jsonl").read_text().splitlines()]
        final = stats[-1]
        adaptive = (f", final augmentation p {final['augment/probability']:.3f} (D's real sign "
                    f"{final['augment/real_sign']:.2f})") if "augment/real_sign" in final else ""
        print(f"{name}: {rates[name]:.0f} img/s, final D(x) {final['d_output/real']:.2f}, "
              f"D(G(z)) {final['d_output/fake']:.2f}{adaptive}")
    print(f"(work directory {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
