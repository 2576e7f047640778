"""Fidelity/diversity metrics on tiny hand-made arrays: oracles at the edges (identical, collapsed, shifted)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.quality.metrics import (frechet_distance, kernel_distance, ms_ssim_diversity, msssim_weights,
                                      precision_recall)


def gaussian(n: int, d: int = 8, shift: float = 0.0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


def test_identical_sets_have_zero_distance_and_full_precision_recall() -> None:
    x = gaussian(200)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    # KID is unbiased: two independent draws of one distribution give ~0 (the same points on both sides
    # would not: their self-similarity enters the cross term)
    same = kernel_distance(gaussian(1000, seed=1), gaussian(1000, seed=2), subsets=10, subset_size=500)
    assert abs(same.mean) < 0.02 and same.std < 0.02
    pr = precision_recall(x, x, k=3)
    assert pr.precision == 1.0 and pr.recall == 1.0


def test_one_repeated_image_as_the_synthetic_set_has_recall_near_zero() -> None:
    real = gaussian(200)
    collapsed = np.repeat(real[:1], 200, axis=0)  # mode collapse: one real image, 200 times
    pr = precision_recall(real, collapsed, k=3)
    assert pr.recall <= 0.02  # only the real image itself (and perhaps a neighbour) is covered
    assert pr.precision == 1.0  # the copies are realistic: fidelity alone cannot see collapse


def test_distance_grows_monotonically_with_the_shift() -> None:
    real = gaussian(300, seed=1)
    shifts = [0.0, 0.25, 0.5, 1.0, 2.0]
    fd = [frechet_distance(real, gaussian(300, shift=s, seed=2)) for s in shifts]
    kid = [kernel_distance(real, gaussian(300, shift=s, seed=2), subsets=10, subset_size=200).mean for s in shifts]
    precision = [precision_recall(real, gaussian(300, shift=s, seed=2)).precision for s in shifts]
    assert all(a < b for a, b in zip(fd, fd[1:])), fd
    assert all(a < b for a, b in zip(kid, kid[1:])), kid
    assert precision[0] > 0.8 and precision[-1] < 0.2
    # for a pure mean shift s in 8 dimensions the Fréchet distance is ~ 8 s^2 (+ sampling noise)
    assert fd[-1] == pytest.approx(8 * 2.0 ** 2, rel=0.15)


def test_frechet_distance_with_fewer_samples_than_dimensions_is_finite() -> None:
    a, b = gaussian(20, d=64, seed=3), gaussian(20, d=64, seed=4, shift=1.0)
    value = frechet_distance(a, b)
    assert np.isfinite(value) and value > frechet_distance(a, gaussian(20, d=64, seed=5))


@pytest.mark.parametrize("channels", [1, 3])
def test_ms_ssim_sees_a_collapsed_set_in_grayscale_and_rgb(channels: int) -> None:
    generator = torch.Generator().manual_seed(0)
    diverse = torch.randint(0, 256, (20, channels, 64, 64), dtype=torch.uint8, generator=generator)
    collapsed = diverse[:1].repeat(20, 1, 1, 1)
    assert ms_ssim_diversity(collapsed, pairs=20) == pytest.approx(1.0, abs=1e-4)
    assert ms_ssim_diversity(diverse, pairs=20) < 0.2


@pytest.mark.parametrize("size", [16, 32, 56, 64, 128, 256])
def test_ms_ssim_scales_fit_the_image_size(size: int) -> None:
    weights = msssim_weights(size)
    assert sum(weights) == pytest.approx(1.0)
    assert len(msssim_weights(256)) == 5 and len(msssim_weights(64)) == 4 and len(msssim_weights(16)) == 2
    images = torch.zeros((2, 1, size, size), dtype=torch.uint8)
    images[1, :, : size // 2] = 255
    assert 0.0 <= ms_ssim_diversity(images, pairs=2) <= 1.0  # MONAI accepts the scales at this size
