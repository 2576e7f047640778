"""Fidelity and diversity metrics on feature vectors (N, D) and on images, each a pure function.

    frechet_distance(real, fake)         monai.metrics.FIDMetric (means + covariances, matrix square root)
    kernel_distance(real, fake)          KID: unbiased polynomial-kernel MMD^2 (torchmetrics' poly_mmd, the
                                         kernel (x.y / d + 1)^3 of Binkowski et al. 2018) averaged over subsets
    precision_recall(real, fake, k=3)    improved precision/recall (Kynkaenniemi et al. 2019): k-NN radii
    ms_ssim_diversity(images)            mean MS-SSIM over random pairs of one set (monai MultiScaleSSIMMetric);
                                         high = images alike (a collapsed class), low = diverse

The features come from an injectable extractor (``pipeline.quality.features``), so every function
here works on any representation, and the tests check them on hand-made arrays.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch

MSSSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, as in monai/torchmetrics


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).double()


def frechet_distance(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (MONAI's FIDMetric).

    Falls back to the symmetric form tr(sqrt(sqrt(S1) S2 sqrt(S1))) (same value, eigenvalues of a
    symmetric PSD matrix) when MONAI's scipy ``sqrtm`` gives a large imaginary part, which happens with
    fewer images than feature dimensions (singular covariances).
    """
    from monai.metrics import FIDMetric

    a, b = _as_tensor(real), _as_tensor(fake)
    if len(a) < 2 or len(b) < 2:
        raise ValueError("the Fréchet distance needs at least 2 feature vectors on each side")
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # scipy's deprecated sqrtm(disp=...) inside MONAI
            value = float(FIDMetric()(b, a))
        if np.isfinite(value):
            return max(value, 0.0)
    except (ValueError, TypeError):
        pass
    return _frechet_symmetric(a, b)


def _frechet_symmetric(a: torch.Tensor, b: torch.Tensor) -> float:
    mu = a.mean(0) - b.mean(0)
    s1, s2 = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    w, v = torch.linalg.eigh(s1)
    root = (v * w.clamp_min(0).sqrt()) @ v.T
    middle = torch.linalg.eigvalsh(root @ s2 @ root).clamp_min(0).sqrt().sum()
    return max(float(mu @ mu + torch.trace(s1) + torch.trace(s2) - 2 * middle), 0.0)


@dataclass
class KernelDistance:
    mean: float
    std: float | None  # None: one distinct subset (both sets no larger than the subset size): no spread to report
    subsets: int  # distinct subsets averaged (1 when every draw would be the same two whole sets)
    subset_size: int


def kernel_distance(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor, subsets: int = 50,
                    subset_size: int = 1000, seed: int = 0) -> KernelDistance:
    """KID: unbiased MMD^2 with the cubic polynomial kernel, mean and std over random subsets.

    When both sets are no larger than ``subset_size`` every "random subset" is the whole of both sets:
    the value is computed once and ``std`` is None (a std of 0 over identical repeats is false precision).
    """
    from torchmetrics.image.kid import poly_mmd

    a, b = _as_tensor(real), _as_tensor(fake)
    size = min(subset_size, len(a), len(b))
    if size < 2:
        raise ValueError("KID needs at least 2 feature vectors on each side")
    if size >= len(a) and size >= len(b):
        return KernelDistance(float(poly_mmd(a, b)), None, 1, size)
    generator = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        ia = torch.randperm(len(a), generator=generator)[:size]
        ib = torch.randperm(len(b), generator=generator)[:size]
        values.append(float(poly_mmd(a[ia], b[ib])))
    array = np.asarray(values)
    return KernelDistance(float(array.mean()), float(array.std()), subsets, size)


@dataclass
class PrecisionRecall:
    precision: float  # share of fake samples inside the real manifold (fidelity)
    recall: float  # share of real samples inside the fake manifold (coverage; ~0 under mode collapse)


def _knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    distances = torch.cdist(x, x)
    return distances.kthvalue(min(k + 1, len(x)), dim=1).values  # k+1: the point itself is at distance 0


def _coverage(points: torch.Tensor, manifold: torch.Tensor, radii: torch.Tensor) -> float:
    """Share of ``points`` inside at least one k-NN ball of ``manifold``."""
    inside = (torch.cdist(points, manifold) <= radii[None, :]).any(dim=1)
    return float(inside.double().mean())


def precision_recall(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor, k: int = 3) -> PrecisionRecall:
    """Improved precision and recall with k-nearest-neighbour manifolds (Kynkaenniemi et al. 2019)."""
    a, b = _as_tensor(real), _as_tensor(fake)
    if len(a) <= k or len(b) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} feature vectors on each side")
    return PrecisionRecall(precision=_coverage(b, a, _knn_radii(a, k)), recall=_coverage(a, b, _knn_radii(b, k)))


def msssim_weights(image_size: int, kernel_size: int = 7) -> tuple[float, ...]:
    """The standard MS-SSIM weights, truncated to the scales an image of this size supports (renormalised)."""
    def fits(levels: int) -> bool:  # the smallest scale holds a kernel, and MONAI's own size check passes
        return ((kernel_size - 1) * 2 ** (levels - 1) < image_size
                and image_size // max(1, (levels - 1)) ** 2 > kernel_size - 1)

    levels = len(MSSSIM_WEIGHTS)
    while levels > 1 and not fits(levels):
        levels -= 1
    weights = MSSSIM_WEIGHTS[:levels]
    return tuple(w / sum(weights) for w in weights)


def ms_ssim_diversity(images: torch.Tensor, pairs: int = 100, seed: int = 0, kernel_size: int = 7) -> float:
    """Mean MS-SSIM over random distinct pairs of uint8 images (N, C, H, W): high = alike, low = diverse."""
    from monai.metrics import MultiScaleSSIMMetric

    n = len(images)
    if n < 2:
        return float("nan")
    generator = torch.Generator().manual_seed(seed)
    first = torch.randint(0, n, (pairs,), generator=generator)
    second = (first + torch.randint(1, n, (pairs,), generator=generator)) % n  # never the same image
    x = images[first].float() / 255.0
    y = images[second].float() / 255.0
    metric = MultiScaleSSIMMetric(spatial_dims=2, data_range=1.0, kernel_size=kernel_size,
                                  weights=msssim_weights(images.shape[-1], kernel_size), reduction="none")
    values = metric(x, y).reshape(pairs, -1).mean(dim=1)
    return float(values.nanmean())
