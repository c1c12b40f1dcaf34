"""The canary quality gate, calibrated on a generator really trained on Fashion-MNIST.

A/A: the final generator against itself, each arm with its own latents (the noise a different
generator of equal quality would show; with the shared latents the gate uses, an identical
generator differs by exactly 0) must never fail at the default margin and sample size, and pass in
most repeats: about one A/A comparison in 25 is inconclusive (it pauses for a person), which is the
gate working as designed, not a false verdict. An early checkpoint of the same run (half the
training) must fail every time. The rates over many repeats are in docs/canary.md
(`python benchmarks/canary_gate.py`).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ganforge.api.training_job import QualityGate
from ganforge.evaluation import ReferenceStatistics
from ganforge.evaluation.canary_gate import gate_extractor, interval_verdict, kid_difference
from ganforge.evaluation.features import FeatureExtractor, extract
from ganforge.serving.export import CheckpointGenerator, load_generator
from tests.trained_run import TrainedRun

REPEATS = 5
# With an inconclusive rate near 1 in 25, three or more of five happen about once in 2000 runs.
AA_PASSES_AT_LEAST = 3


@torch.no_grad()
def features(loaded: CheckpointGenerator, extractor: FeatureExtractor, count: int, seed: int) -> np.ndarray:
    z = np.random.default_rng(seed).standard_normal((count, loaded.facts.latent_dim)).astype(np.float32)
    return extract(extractor, loaded.module(torch.from_numpy(z))).numpy()


@pytest.mark.timeout(900)
def test_the_gate_passes_a_generator_against_itself_and_fails_an_early_checkpoint(fashion_run: TrainedRun) -> None:
    early, final = load_generator(fashion_run.early), load_generator(fashion_run.final)

    files = final.reference_files  # what the exported artifact carries, domain classifier included
    reference = ReferenceStatistics.from_files(lambda name: files[name])
    extractor = gate_extractor(reference, lambda name: files[name], None, torch.device("cpu"))
    assert extractor.name == "domain"
    reals = reference.features["domain"].sample
    gate = QualityGate()
    n = gate.sample_size

    aa_verdicts = []
    for repeat in range(REPEATS):
        one, other = features(final, extractor, n, 2 * repeat), features(final, extractor, n, 2 * repeat + 1)
        same = kid_difference(one, other, reals, gate.confidence, gate.bootstrap_resamples, seed=repeat).increase
        aa_verdicts.append(verdict := interval_verdict(same, gate.kid_margin))
        assert verdict != "Fail", f"A/A repeat {repeat} rolled an equal generator back: {same}"
        worse = kid_difference(features(early, extractor, n, 2 * repeat), one, reals, gate.confidence,
                               gate.bootstrap_resamples, seed=repeat).increase
        assert interval_verdict(worse, gate.kid_margin) == "Fail", f"early checkpoint, repeat {repeat}: {worse}"
    assert aa_verdicts.count("Pass") >= AA_PASSES_AT_LEAST, aa_verdicts
