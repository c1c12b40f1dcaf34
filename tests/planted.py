"""Bad candidates planted for the canary's analysis: the trained generator, damaged, published as
a revision like any artifact. The export itself refuses a generator whose output is not finite, so
these are written directly, as artifacts from elsewhere would be."""

from __future__ import annotations

from pathlib import Path

import torch

from ganforge.serving.export import load_generator, to_onnx
from ganforge.serving.model_repository import Revision, write_revision

# Iterations of a 1024x1024 layer per request, whatever the batch size: about 300 ms on one core of
# a current server CPU (AVX-512), three times the gates' 100 ms p95 bound, so a faster CPU still fails.
SLOW_ITERATIONS = 6000


class NanForSomeLatents(torch.nn.Module):
    """NaN images whenever the first latent is below -0.5; Triton's warm-up with zero latents still
    passes, so the NaN shows only in served requests."""

    def __init__(self, generator: torch.nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        poison = 0.0 * torch.log(z[:, :1] + 0.5)
        images: torch.Tensor = self.generator(z, labels) + poison.view(-1, 1, 1, 1)
        return images


class Slow(torch.nn.Module):
    """The same images, after a fixed amount of useless work per request."""

    def __init__(self, generator: torch.nn.Module) -> None:
        super().__init__()
        self.generator = generator
        self.layer = torch.nn.Linear(1024, 1024)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = z[:1, :1].expand(1, 1024) * 0.001
        for _ in range(SLOW_ITERATIONS):
            x = torch.tanh(self.layer(x))
        images: torch.Tensor = self.generator(z, labels) + 0.0 * x.sum()
        return images


def planted(checkpoint: Path, repository: Path, damage: str) -> Revision:
    """`damage`: collapsed (one flat grey image for every latent), nan or slow."""
    loaded = load_generator(checkpoint)
    module: torch.nn.Module = loaded.module
    if damage == "collapsed":
        last = [m for m in module.modules() if isinstance(m, torch.nn.ConvTranspose2d)][-1]
        with torch.no_grad():
            last.weight.zero_()  # every image is tanh(0)
    elif damage == "nan":
        module = NanForSomeLatents(module)
    else:
        module = Slow(module).eval()
    data = to_onnx(module, loaded.facts, 17).SerializeToString()
    return write_revision(repository, data, loaded.facts, {"planted": damage}, loaded.reference_files,
                          "python-onnxruntime")
