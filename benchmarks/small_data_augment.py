"""Small data: a DCGAN trained on 2k Fashion-MNIST images with and without augmentation of D's
inputs, at equal kimg, judged against the whole training set.

    python benchmarks/small_data_augment.py [--images 2000] [--kimg 384] [--every 64] [--width 32]
                                            [--threads 2]
                                            [--policy translation,cutout] [--no-xflip]

Both runs train the same model from the same seed on the same 2000 images (a seeded subset, as an
npz); they differ only in spec.training.augment. Every `--every` kimg a checkpoint is kept, and each
one's EMA generator is scored afterwards with FD in the domain classifier's space against all 60k
training images (classifier and reference statistics from the full set, 5000 samples per point),
so the figure says how well each generator matches the real distribution, not the 2000 images.
"""

from __future__ import annotations

import argparse
import json
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
from ganforge.trainer.checkpoint import checkpoint_name
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
        "resources": {"workers": 1, "gpusPerWorker": 0},
        "checkpoint": {"intervalKimg": args.every, "keepLast": 1000, "background": False},
        "evaluation": {"metrics": []},
    })


def _score(run_dir: Path, spec: GANTrainingJobSpec, args: argparse.Namespace, suite: EvaluationSuite,
           memorization: MemorizationReference) -> list[tuple[float, float, float]]:
    """(kimg, FD against the whole training set, memorisation against the small one) per checkpoint."""
    points = []
    generator, _ = build_models(spec.model, 32, 1, 0)
    nimg = round(args.every * 1000)
    while nimg <= round(args.kimg * 1000):
        state = torch.load(run_dir / "checkpoints" / checkpoint_name(nimg) / "state.pt", weights_only=True)
        generator.load_state_dict(state["G_ema"])
        images, _ = suite.generate(generator.eval(), 64, 0, torch.device("cpu"), seed=0)
        fd = suite.evaluate(generator, 64, 0, torch.device("cpu"), seed=0).metrics["fd_domain"]
        assert suite.classifier is not None
        memorized = memorization.score(extract(suite.classifier, images).numpy())["memorization"]
        points.append((nimg / 1000, fd, memorized))
        nimg += round(args.every * 1000)
    return points


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--kimg", type=float, default=384.0)
    parser.add_argument("--every", type=float, default=64.0)
    parser.add_argument("--width", type=int, default=32, help="spec.model.width (G and D)")
    parser.add_argument("--policy", default="translation,cutout", help="spec.training.augment.policy, comma-separated")
    parser.add_argument("--no-xflip", action="store_true", help="augment without x-flips")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--rescore", type=Path, help="score the runs in this work directory again; train nothing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    full = load_dataset(DatasetSpec(uri=f"file://{FASHION_MNIST}", format="idx", resolution=32))
    work = args.rescore or Path(tempfile.mkdtemp(prefix="ganforge-small-data-"))
    picked = torch.randperm(len(full), generator=torch.Generator().manual_seed(0))[: args.images]
    data = work / "subset.npz"
    assert full.labels is not None and full.held_out is not None
    np.savez(data, images=full.images[picked, 0].numpy(), labels=full.labels[picked].numpy())

    suite = build_suite(EvaluationSpec(num_samples=args.samples, feature_extractors=["domain"], metrics=["fd"]),
                        full, work / "cache", torch.device("cpu"))
    assert suite.classifier is not None
    # Memorisation of the small training set, with the unseen test split as the real yardstick.
    memorization = MemorizationReference.build(extract(suite.classifier, full.images[picked]).numpy(),
                                               extract(suite.classifier, full.held_out).numpy())
    results: dict[str, list[tuple[float, float, float]]] = {}
    rates: dict[str, float] = {}
    augment_spec = {"policy": [p for p in args.policy.split(",") if p], "xflip": not args.no_xflip}
    for name, augment in (("no augmentation", None), ("augmented", augment_spec)):
        spec = _spec(data, args, augment)
        run_dir = work / name.replace(" ", "-")
        if args.rescore is None:
            start = time.perf_counter()
            options = TrainingOptions(spec, RuntimeOptions(run_dir=str(run_dir), cache_dir=str(work / "cache"),
                                                           device="cpu", threads=args.threads, tensorboard=False))
            code = train(options)
            assert int(code) == 0, f"{name}: exit code {code}"
            print(f"{name}: trained {args.kimg} kimg in {time.perf_counter() - start:.0f}s", file=sys.stderr)
        stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
        rates[name] = float(np.median([s["timing/images_per_second"] for s in stats]))
        results[name] = _score(run_dir, spec, args, suite, memorization)

    print(f"\naugmentation {augment_spec}; {args.images} training images. FD: domain features, {args.samples} "
          f"samples vs all {len(full)} training images (lower is better). Memorisation: the share of samples closer "
          f"to one of the {args.images} training images than 95% of unseen test images come (0.05 = as novel as "
          "real data):\n")
    print("| kimg | FD, no augmentation | FD, augmented | FD ratio | memorisation, no augmentation | "
          "memorisation, augmented |")
    print("|---:|---:|---:|---:|---:|---:|")
    plain, augmented = results["no augmentation"], results["augmented"]
    for (kimg, fd_plain, mem_plain), (_, fd_aug, mem_aug) in zip(plain, augmented, strict=True):
        print(f"| {kimg:g} | {fd_plain:.1f} | {fd_aug:.1f} | {fd_aug / fd_plain:.2f}x | {mem_plain:.3f} | "
              f"{mem_aug:.3f} |")
    print(f"\nthroughput: {rates['no augmentation']:.0f} img/s without, {rates['augmented']:.0f} img/s with "
          f"augmentation (work directory {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
