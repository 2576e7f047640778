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


# ---------------------------------------------------------------------------------------------------------------
# Known values: the Fréchet distance (MONAI's path and the symmetric fallback) and MS-SSIM against closed forms


def exact_sample(mean: np.ndarray, cov: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n vectors whose sample mean and sample covariance (ddof=1) are exactly ``mean`` and ``cov``."""
    z = np.random.default_rng(seed).normal(size=(n, len(mean)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # sample covariance exactly I
    return mean + z @ np.linalg.cholesky(cov).T


def closed_form_fd(m1: np.ndarray, s1: np.ndarray, m2: np.ndarray, s2: np.ndarray) -> float:
    """|m1 - m2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)); tr (S1 S2)^(1/2) = sum of sqrt of the eigenvalues of S1 S2
    (real, non-negative for PSD S1, S2), so singular covariances need no matrix square root."""
    eig = np.clip(np.linalg.eigvals(s1 @ s2).real, 0, None)
    return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(eig).sum())


def _fallback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import monai.metrics

    class Broken:
        def __call__(self, *_args):
            return torch.tensor(float("nan"))

    monkeypatch.setattr(monai.metrics, "FIDMetric", Broken)


@pytest.mark.parametrize("path", ["monai", "fallback"])
def test_frechet_distance_of_diagonal_gaussians_is_the_hand_computed_value(path: str,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # S1 = diag(1, 4, 9), S2 = diag(4, 1, 1), means 0 and (1, 2, 2): |dm|^2 = 9, sum (sqrt s1 - sqrt s2)^2 = 1 + 1 + 4
    if path == "fallback":
        _fallback_only(monkeypatch)
    a = exact_sample(np.zeros(3), np.diag([1.0, 4.0, 9.0]), 50, seed=0)
    b = exact_sample(np.array([1.0, 2.0, 2.0]), np.diag([4.0, 1.0, 1.0]), 70, seed=1)
    assert frechet_distance(a, b) == pytest.approx(15.0, abs=1e-6)


@pytest.mark.parametrize("path", ["monai", "fallback"])
def test_frechet_distance_of_correlated_gaussians_matches_the_closed_form(path: str,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from scipy.linalg import sqrtm

    if path == "fallback":
        _fallback_only(monkeypatch)
    rng = np.random.default_rng(7)
    q1, q2 = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = q1 @ q1.T + 0.5 * np.eye(5), q2 @ q2.T + 0.1 * np.eye(5)  # non-commuting: no per-axis shortcut
    m1, m2 = rng.normal(size=5), rng.normal(size=5)
    a, b = exact_sample(m1, s1, 40, seed=2), exact_sample(m2, s2, 60, seed=3)
    expected = float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * sqrtm(s1 @ s2).real))
    assert expected == pytest.approx(closed_form_fd(m1, s1, m2, s2), rel=1e-9)  # the two closed forms agree
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)


def test_frechet_fallback_with_fewer_vectors_than_dimensions_matches_the_closed_form(
        monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = gaussian(12, d=32, seed=3), gaussian(15, d=32, seed=4, shift=0.5)
    expected = closed_form_fd(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-5)  # whichever path runs
    _fallback_only(monkeypatch)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)  # the singular-covariance fallback


@pytest.mark.parametrize("size", [32, 64])
def test_ms_ssim_of_two_flat_images_is_the_luminance_term_to_the_last_weight(size: int) -> None:
    # flat images have no variance: every contrast-structure term is (0 + C2) / (0 + C2) = 1, so MS-SSIM is the
    # coarsest scale's luminance term l = (2 a b + C1) / (a^2 + b^2 + C1), C1 = (0.01 * data_range)^2, to its weight
    a, b = 64 / 255, 191 / 255
    luminance = (2 * a * b + 1e-4) / (a * a + b * b + 1e-4)  # 0.6009 for these grey levels
    images = torch.cat([torch.full((1, 1, size, size), 64, dtype=torch.uint8),
                        torch.full((1, 1, size, size), 191, dtype=torch.uint8)])
    # 1e-3: MONAI computes variances as E[x^2] - E[x]^2 in float32 (measured deviation 4e-4); a wrong scale count
    # or weight is off by far more (two scales at 32 px would give 0.645 instead of 0.786)
    assert ms_ssim_diversity(images, pairs=4) == pytest.approx(luminance ** msssim_weights(size)[-1], abs=1e-3)
    assert ms_ssim_diversity(images[:1].repeat(2, 1, 1, 1), pairs=4) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("size", [64, 128])
def test_ms_ssim_of_a_structured_pair_agrees_with_torchmetrics(size: int) -> None:
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    g = torch.Generator().manual_seed(size)
    base = torch.nn.functional.avg_pool2d(torch.rand(1, 1, size, size, generator=g), 5, 1, 2)
    x = (base * 255).round().to(torch.uint8)
    y = ((0.7 * base + 0.3 * torch.rand(1, 1, size, size, generator=g)) * 255).round().to(torch.uint8)
    expected = float(multiscale_structural_similarity_index_measure(
        x.float() / 255, y.float() / 255, gaussian_kernel=True, sigma=1.5, kernel_size=7, data_range=1.0,
        betas=msssim_weights(size), normalize=None))
    # the two libraries treat the border differently (MONAI: valid windows, torchmetrics: reflected padding):
    # measured 0.756 vs 0.758 (64 px) and 0.782 vs 0.785 (128 px)
    assert ms_ssim_diversity(torch.cat([x, y]), pairs=2) == pytest.approx(expected, abs=0.01)
    assert 0.5 < expected < 0.95  # a pair that is neither identical nor unrelated: the comparison has teeth
