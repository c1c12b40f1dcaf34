"""Small data: a DCGAN trained on 2k Fashion-MNIST images with and without augmentation of D's
inputs, at equal kimg, judged against the whole training set.

    python benchmarks/small_data_augment.py [--images 2000] [--kimg 384] [--every 64] [--threads 2]
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
from ganforge.models import build_models
from ganforge.trainer.checkpoint import checkpoint_name
from ganforge.trainer.config import RuntimeOptions, TrainingOptions
from ganforge.trainer.data import load_dataset
from ganforge.trainer.evaluation_suite import build_suite
from ganforge.trainer.loop import train

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def _spec(data: Path, args: argparse.Namespace, augment: dict[str, Any] | None) -> GANTrainingJobSpec:
    return GANTrainingJobSpec.model_validate({
        "dataset": {"uri": str(data), "format": "npz", "resolution": 32},
        "model": {"architecture": "dcgan", "latentDim": 64, "width": 32, "ema": {"halfLifeKimg": 2}},
        "training": {"totalKimg": args.kimg, "batchSize": 64, "reportIntervalKimg": args.every,
                     "sampleIntervalKimg": args.every, "seed": 3, **({"augment": augment} if augment else {})},
        "resources": {"workers": 1, "gpusPerWorker": 0},
        "checkpoint": {"intervalKimg": args.every, "keepLast": 1000, "background": False},
        "evaluation": {"metrics": []},
    })


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--kimg", type=float, default=384.0)
    parser.add_argument("--every", type=float, default=64.0)
    parser.add_argument("--policy", default="translation,cutout", help="spec.training.augment.policy, comma-separated")
    parser.add_argument("--no-xflip", action="store_true", help="augment without x-flips")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--samples", type=int, default=5000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    full = load_dataset(DatasetSpec(uri=f"file://{FASHION_MNIST}", format="idx", resolution=32))
    work = Path(tempfile.mkdtemp(prefix="ganforge-small-data-"))
    picked = torch.randperm(len(full), generator=torch.Generator().manual_seed(0))[: args.images]
    data = work / "subset.npz"
    assert full.labels is not None
    np.savez(data, images=full.images[picked, 0].numpy(), labels=full.labels[picked].numpy())

    suite = build_suite(EvaluationSpec(num_samples=args.samples, feature_extractors=["domain"], metrics=["fd"]),
                        full, work / "cache", torch.device("cpu"))
    results: dict[str, list[tuple[float, float, float]]] = {}
    augment_spec = {"policy": [p for p in args.policy.split(",") if p], "xflip": not args.no_xflip}
    for name, augment in (("no augmentation", None), ("augmented", augment_spec)):
        spec = _spec(data, args, augment)
        run_dir = work / name.replace(" ", "-")
        start = time.perf_counter()
        code = train(TrainingOptions(spec, RuntimeOptions(run_dir=str(run_dir), cache_dir=str(work / "cache"),
                                                         device="cpu", threads=args.threads, tensorboard=False)))
        seconds = time.perf_counter() - start
        assert int(code) == 0, f"{name}: exit code {code}"
        stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
        rate = float(np.median([s["timing/images_per_second"] for s in stats]))
        points = []
        generator, _ = build_models(spec.model, 32, 1, 0)
        nimg = round(args.every * 1000)
        while nimg <= round(args.kimg * 1000):
            state = torch.load(run_dir / "checkpoints" / checkpoint_name(nimg) / "state.pt", weights_only=True)
            generator.load_state_dict(state["G_ema"])
            fd = suite.evaluate(generator.eval(), 64, 0, torch.device("cpu"), seed=0).metrics["fd_domain"]
            points.append((nimg / 1000, fd, rate))
            nimg += round(args.every * 1000)
        results[name] = points
        print(f"{name}: trained {args.kimg} kimg in {seconds:.0f}s ({rate:.0f} img/s)", file=sys.stderr)

    print(f"\naugmentation {augment_spec}; {args.images} training images, FD (domain features, "
          f"{args.samples} samples vs all {len(full)} training images), lower is better:\n")
    header = "| kimg | " + " | ".join(results) + " | ratio augmented / none |"
    print(header)
    print("|" + "---:|" * (len(results) + 2))
    plain, augmented = results["no augmentation"], results["augmented"]
    for (kimg, fd_plain, _), (_, fd_aug, _) in zip(plain, augmented, strict=True):
        print(f"| {kimg:g} | {fd_plain:.1f} | {fd_aug:.1f} | {fd_aug / fd_plain:.2f}x |")
    print(f"\nthroughput: {plain[0][2]:.0f} img/s without, {augmented[0][2]:.0f} img/s with augmentation")
    print(f"(work directory {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
