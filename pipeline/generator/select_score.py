"""The selection score of one candidate, its standard error, and a choice that knows what it cannot tell apart.

    score   = CAS - gap + diversity_weight * novelty

    CAS      classification accuracy score: mean over classes of the share of the candidate's images the
             reference classifier (trained on the real sample only) assigns to their intended class;
             real-seeded images are judged by the fold model that never trained on their seed
    gap      intensity gap (pipeline.quality.signals): mean |synthetic - real| of per-class mean, std and
             background level, pixels in [0, 1]
    novelty  per image min(1, d / m): d = RMS pixel distance to its nearest real training image, m = the
             median distance of the class's real images to their nearest *other* real image. A copy of a
             training image scores 0, an image as far from every real image as real images are from each
             other scores about 1 (capped: being further away earns nothing, CAS already judges realism).
             Without it ``CAS - gap`` rewards near-copies of the seed images (gap 0, CAS the reference's
             own accuracy). Improved recall was considered and not used: with the few images a candidate
             has, k-NN recall of copies of real images is as high as that of fresh images.

The standard error comes from a class-stratified bootstrap over the candidate's images (scipy.stats.
bootstrap, one sample per class, every component recomputed per resample). A bootstrap of 8 images that
all agree gives a CAS spread of 0, which is false precision, so the CAS part is floored at its binomial
SE with the (x + 1) / (n + 2) estimate of each class's agreement. Two candidates are tied when their
scores differ by less than max(select_tolerance, sqrt(SE_a^2 + SE_b^2)) (unpaired, hence conservative:
candidates share their sampling seeds); among tied candidates the configured preference decides.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from pipeline.generator.synthesis import RealSample, rmse
from pipeline.quality.signals import image_statistics

BOOTSTRAP_RESAMPLES = 400


def real_spacing(real: RealSample) -> np.ndarray:
    """Per class index: median RMS distance of its real images to their nearest other real image (any class)."""
    d = torch.cat([rmse(real.images[k:k + 256], real.images) for k in range(0, len(real.images), 256)])
    d.fill_diagonal_(float("inf"))
    nearest = d.min(1).values.numpy()
    labels = real.labels.numpy()
    classes = int(labels.max()) + 1 if len(labels) else 0
    return np.array([float(np.median(nearest[labels == c])) if (labels == c).any() and
                     np.isfinite(nearest[labels == c]).any() else float("nan") for c in range(classes)])


def novelty(images: torch.Tensor, labels: np.ndarray, real: RealSample, spacing: np.ndarray) -> np.ndarray:
    """Per image min(1, distance to the nearest real training image / its class's real spacing)."""
    nearest = torch.cat([rmse(images[k:k + 256], real.images).min(1).values
                         for k in range(0, len(images), 256)]).numpy()
    scale = spacing[np.asarray(labels)]
    return np.clip(np.where(scale > 0, nearest / np.where(scale > 0, scale, 1.0), 1.0), 0.0, 1.0)


def per_image_components(images: torch.Tensor, labels: list[int], agree: np.ndarray, real: RealSample,
                         spacing: np.ndarray) -> dict[str, np.ndarray]:
    """What the score is made of, image by image: agreement (0/1), intensity statistics, novelty."""
    stats = image_statistics(images)
    return {"label": np.asarray(labels), "agree": np.asarray(agree, dtype=float),
            "stats": stats.to_numpy(dtype=float), "stat_names": np.asarray(stats.columns),
            "novelty": novelty(images, np.asarray(labels), real, spacing)}


def real_class_statistics(real: RealSample, classes: int) -> np.ndarray:
    """(classes, statistics) mean image statistics of the real sample per class, columns as image_statistics."""
    stats = image_statistics(real.images).to_numpy(dtype=float)
    labels = real.labels.numpy()
    return np.stack([stats[labels == c].mean(0) if (labels == c).any() else np.full(stats.shape[1], np.nan)
                     for c in range(classes)])


def _score(parts: dict[str, np.ndarray], rows: list[np.ndarray], real_stats: np.ndarray,
           weight: float) -> dict[str, float]:
    cas, gap, nov = [], [], []
    for c, idx in enumerate(rows):
        if len(idx) == 0:
            continue
        cas.append(parts["agree"][idx].mean())
        gap.append(np.abs(parts["stats"][idx].mean(0) - real_stats[c]).mean())
        nov.append(parts["novelty"][idx].mean())
    cas_v, gap_v, nov_v = float(np.mean(cas)), float(np.mean(gap)), float(np.mean(nov))
    return {"score": cas_v - gap_v + weight * nov_v, "cas": cas_v, "gap": gap_v, "novelty": nov_v}


def score_with_se(parts: dict[str, np.ndarray], real_stats: np.ndarray, weight: float, seed: int) -> dict[str, Any]:
    """The score, its components and standard errors (class-stratified bootstrap; CAS floored at binomial SE)."""
    from scipy.stats import bootstrap

    classes = len(real_stats)
    rows = [np.flatnonzero(parts["label"] == c) for c in range(classes)]
    point = _score(parts, rows, real_stats, weight)
    present = [r for r in rows if len(r)]
    out: dict[str, Any] = {k: round(v, 5) for k, v in point.items()}
    per_class_n = [len(r) for r in present]
    floor = math.sqrt(sum(((parts["agree"][r].sum() + 1) / (len(r) + 2)) *
                          (1 - (parts["agree"][r].sum() + 1) / (len(r) + 2)) / len(r) for r in present)) / len(present)
    if min(per_class_n) >= 2:
        def stat(*samples: np.ndarray) -> np.ndarray:
            picked = [np.empty(0, dtype=int)] * classes
            for position, c in enumerate(c for c, r in enumerate(rows) if len(r)):
                picked[c] = rows[c][np.asarray(samples[position], dtype=int)]
            s = _score(parts, picked, real_stats, weight)
            return np.array([s["score"], s["cas"], s["gap"], s["novelty"]])

        result = bootstrap(tuple(np.arange(len(r)) for r in present), stat, n_resamples=BOOTSTRAP_RESAMPLES,
                           vectorized=False, method="percentile", random_state=np.random.default_rng(seed))
        se = np.asarray(result.standard_error, dtype=float)
    else:  # one image in a class: a bootstrap cannot see any spread; only the binomial floor is left
        se = np.array([0.0, 0.0, float("nan"), float("nan")])
    se_cas = max(float(se[1]), floor)
    out.update(se=round(float(np.sqrt(max(se[0], 0.0) ** 2 + max(se_cas ** 2 - se[1] ** 2, 0.0))), 5),
               se_cas=round(se_cas, 5), se_gap=None if np.isnan(se[2]) else round(float(se[2]), 5),
               se_novelty=None if np.isnan(se[3]) else round(float(se[3]), 5), images_per_class=min(per_class_n))
    return out


def choose(candidates: list[dict[str, Any]], tolerance: float,
           prefer: Callable[[dict[str, Any]], Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The preferred candidate among those tied with the best, and every candidate annotated with its margin.

    ``margin`` = max(tolerance, sqrt(SE_best^2 + SE^2)); a candidate within it of the best score is tied.
    """
    best = max(candidates, key=lambda c: c["score"])
    annotated = []
    for c in candidates:
        margin = max(tolerance, math.sqrt(best.get("se", 0.0) ** 2 + c.get("se", 0.0) ** 2))
        annotated.append({**c, "margin": round(margin, 5), "tied": bool(c["score"] >= best["score"] - margin)})
    tied = [c for c in annotated if c["tied"]]
    chosen = sorted(tied, key=prefer)[0]
    return chosen, annotated


def images_needed(candidates: list[dict[str, Any]], tolerance: float) -> int | None:
    """Images per class and candidate for the largest SE to fall under the tolerance (SE ~ 1/sqrt(n)); None when
    it already does."""
    worst = max(candidates, key=lambda c: c.get("se", 0.0))
    se, n = worst.get("se", 0.0), worst.get("images_per_class", 0)
    if tolerance <= 0 or se <= tolerance or not n:
        return None
    return int(math.ceil(n * (se / tolerance) ** 2))
