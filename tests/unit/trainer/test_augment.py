"""Differentiable augmentation: shapes, what each transform does, gradients, and seeded draws."""

from __future__ import annotations

import pytest
import torch

from ganforge.trainer.augment import AdaptiveProbability, Augment, cutout, translation, xflip


def _images(n: int = 64, channels: int = 1, size: int = 16) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_translation_shifts_whole_images_and_fills_with_zeros() -> None:
    torch.manual_seed(1)
    x = _images()
    y = translation(x)
    assert y.shape == x.shape
    max_shift = 2  # 1/8 of 16
    for original, moved in zip(x, y, strict=True):
        matches = [(dy, dx) for dy in range(-max_shift, max_shift + 1) for dx in range(-max_shift, max_shift + 1)
                   if torch.equal(torch.roll(original, (-dy, -dx), (1, 2))[:, 3:-3, 3:-3], moved[:, 3:-3, 3:-3])]
        assert matches, "every output is a shifted copy of its input"
    assert (y == 0).any()  # the border pixels shifted in are zero


def test_cutout_zeroes_one_square_per_image() -> None:
    torch.manual_seed(2)
    x = _images() * 0.5 + 0.6  # strictly positive, so zeros come only from the cutout
    y = cutout(x)
    zeroed = (y == 0).flatten(1).sum(dim=1)
    assert int(zeroed.max()) == 8 * 8 and int(zeroed.min()) > 0  # half the size; clipped at the borders
    assert torch.equal(y[y != 0], x[y != 0])


def test_xflip_mirrors_about_half_the_images() -> None:
    torch.manual_seed(3)
    x = _images(1000)
    y = xflip(x)
    flipped = sum(torch.equal(a.flip(2), b) for a, b in zip(x, y, strict=True))
    assert 400 < flipped < 600


def test_gradients_flow_through_every_transform() -> None:
    x = _images(8, channels=3).requires_grad_(True)
    Augment(["color", "translation", "cutout"], flip=True)(x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_the_same_seed_gives_the_same_augmentation() -> None:
    augment = Augment(["color", "translation", "cutout"], flip=True)
    torch.manual_seed(4)
    a = augment(_images())
    torch.manual_seed(4)
    b = augment(_images())
    assert torch.equal(a, b)


def test_no_policy_is_the_identity_and_unknown_names_are_refused() -> None:
    x = _images()
    assert not Augment([], flip=False).enabled and torch.equal(Augment([], flip=False)(x), x)
    with pytest.raises(ValueError, match="unknown augmentation"):
        Augment(["blur"], flip=False)


def test_each_transform_applies_to_each_image_with_the_probability() -> None:
    x = _images(2000) * 0.5 + 0.6  # strictly positive: an image with a zero was cut out
    torch.manual_seed(5)
    cut = (Augment(["cutout"], flip=False, probability=0.25)(x) == 0).flatten(1).any(dim=1)
    assert 400 < int(cut.sum()) < 600
    assert torch.equal(Augment(["cutout"], flip=False, probability=0.0)(x), x)
    # At 1 no choice is drawn: the same draws as before probabilities existed.
    torch.manual_seed(6)
    always = Augment(["cutout"], flip=False, probability=1.0)(x)
    torch.manual_seed(6)
    assert torch.equal(always, cutout(x))


def test_adaptive_probability_rises_while_d_overfits_and_falls_back_within_bounds() -> None:
    control = AdaptiveProbability(target=0.6, speed_kimg=1.0)
    p = control.next(0.0, real_sign=0.2, images=100)
    assert p == 0.0  # D not overfitting: p stays at its floor
    for expected in (0.1, 0.2, 0.3):
        p = control.next(p, real_sign=0.9, images=100)
        assert p == pytest.approx(expected)
    p = control.next(p, real_sign=0.6, images=100)
    assert p == pytest.approx(0.3)  # on target: unchanged
    p = control.next(p, real_sign=-0.5, images=250)
    assert p == pytest.approx(0.05)
    for _ in range(20):
        p = control.next(p, real_sign=1.0, images=100)
    assert p == 1.0
