"""Calibrating the canary's quality gate on the real Fashion-MNIST: false fails, power, sample size.

Trains the example's DCGAN (one process, a few minutes on two cores; reused with --run-dir), then,
for each sample size N, repeats the gate's KID comparison:

- A/A: the final generator against itself, each arm with its own latents (the gate itself uses the
  same latents for both arms, where an identical generator differs by exactly 0; independent
  latents give the noise a different generator of equal quality would show). A Fail here is a
  false fail; the default margin must keep it rare.
- early vs final: an early checkpoint of the same run as the canary against the final generator as
  the stable, on shared latents, as the gate runs: how often the gate catches a subtly worse model.

The gated statistic is the relative KID increase (KID(canary) - KID(stable)) / KID(stable).
Reported per N: the A/A verdict counts, the median width of its interval, the early checkpoint's
verdict counts and median increase, and the seconds one comparison (with its bootstrap) takes.

    python benchmarks/canary_gate.py --repeats 20
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import yaml

from ganforge.api.training_job import DEFAULT_KID_MARGIN
from ganforge.evaluation import ReferenceStatistics
from ganforge.evaluation.canary_gate import gate_extractor, interval_verdict, kid_difference
from ganforge.evaluation.features import FeatureExtractor, extract
from ganforge.serving.export import CheckpointGenerator, load_generator

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
STEPS, BATCH = 600, 64


def train(run_dir: Path, cache_dir: Path) -> None:
    spec = {
        "dataset": {"uri": f"file://{FASHION_MNIST}", "format": "idx", "resolution": 32},
        "model": {"architecture": "dcgan", "latentDim": 64, "width": 32, "ema": {"halfLifeKimg": 2}},
        "training": {"totalKimg": STEPS * BATCH / 1000, "batchSize": BATCH, "reportIntervalKimg": 6.4,
                     "sampleIntervalKimg": 0, "optimizer": {"betas": [0.5, 0.999]}},
        "resources": {"workers": 1, "gpusPerWorker": 0},
        "checkpoint": {"intervalKimg": STEPS * BATCH / 1000 / 6, "keepLast": 10},
        "evaluation": {"intervalKimg": 0, "numSamples": 2000, "featureExtractors": ["domain"], "metrics": ["kid"]},
    }
    config = run_dir.parent / "job.yaml"
    config.write_text(yaml.safe_dump({"apiVersion": "ganforge.io/v1alpha1", "kind": "GANTrainingJob",
                                      "metadata": {"name": "calibration"}, "spec": spec}))
    subprocess.run([sys.executable, "-m", "ganforge.cli", "train", "--config", str(config), "--run-dir", str(run_dir),
                    "--cache-dir", str(cache_dir), "--threads", "2", "--no-tensorboard"], check=True)


def checkpoints(run_dir: Path) -> list[Path]:
    found = sorted(path.parent for path in run_dir.rglob("manifest.json") if path.parent.name.startswith("ckpt-"))
    if len(found) < 2:
        raise SystemExit(f"need at least two checkpoints under {run_dir}, found {found}")
    return found


@torch.no_grad()
def features(loaded: CheckpointGenerator, extractor: FeatureExtractor, count: int, seed: int) -> np.ndarray:
    z = np.random.default_rng(seed).standard_normal((count, loaded.facts.latent_dim)).astype(np.float32)
    return extract(extractor, loaded.module(torch.from_numpy(z))).numpy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="gate comparisons per N and case")
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 500, 1000, 2000])
    parser.add_argument("--margin", type=float, default=DEFAULT_KID_MARGIN)
    parser.add_argument("--run-dir", type=Path, help="reuse (or keep) a training run here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = args.run_dir or Path(scratch) / "run"
        if not any(run_dir.rglob("manifest.json")):
            run_dir.mkdir(parents=True, exist_ok=True)
            train(run_dir, Path(scratch) / "cache")
        found = checkpoints(run_dir)
        final, early = load_generator(found[-1]), load_generator(found[len(found) // 2 - 1])
        files = final.reference_files
        reference = ReferenceStatistics.from_files(lambda name: files[name])
        extractor = gate_extractor(reference, lambda name: files[name], None, torch.device("cpu"))
        reals = reference.features[extractor.name].sample
        print(f"final {found[-1].name}, early {found[len(found) // 2 - 1].name}; feature space {extractor.name}; "
              f"{len(reals)} reference samples; margin {args.margin:g}; {args.repeats} repeats\n")
        print("| N | A/A pass / inconclusive / fail | median interval width | early vs final: "
              "fail / inconclusive / pass | median KID increase of early | s per gate |")
        print("|---:|---|---:|---|---:|---:|")
        for n in args.sizes:
            aa: Counter[str] = Counter()
            ab: Counter[str] = Counter()
            widths, deltas, seconds = [], [], []
            for repeat in range(args.repeats):
                one, other = features(final, extractor, n, 2 * repeat), features(final, extractor, n, 2 * repeat + 1)
                started = time.perf_counter()
                interval = kid_difference(one, other, reals, seed=repeat).increase
                seconds.append(time.perf_counter() - started)
                aa[interval_verdict(interval, args.margin)] += 1
                widths.append(interval.upper - interval.lower)
                worse = kid_difference(features(early, extractor, n, 2 * repeat), one, reals, seed=repeat).increase
                ab[interval_verdict(worse, args.margin)] += 1
                deltas.append(worse.estimate)
            print(f"| {n} | {aa['Pass']} / {aa['Inconclusive']} / {aa['Fail']} | {statistics.median(widths):.4f} | "
                  f"{ab['Fail']} / {ab['Inconclusive']} / {ab['Pass']} | {statistics.median(deltas):.4f} | "
                  f"{statistics.median(seconds):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
