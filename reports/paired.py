"""Paired comparison of two classifiers scored on the same held-out images.

Every arm is evaluated on the same held-out real images, so the right question is paired: on
how many images does one model get it right and the other wrong? Two answers, both reported:

* exact McNemar test: under "no difference" the discordant images split 50/50, so the number
  the challenger alone gets right is Binomial(b + c, 1/2); two-sided exact p-value
  (``scipy.stats.binomtest``), no chi-square approximation;
* a paired bootstrap of the accuracy difference: resample images (both models' outcomes on an
  image travel together) and take the 2.5% / 97.5% percentiles.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import binomtest

ALPHA = 0.05


@dataclass(frozen=True)
class PairedComparison:
    n: int  # images scored by both
    accuracy_reference: float
    accuracy_challenger: float
    difference: float  # challenger - reference, as a fraction (0.012 = +1.2 points)
    ci_low: float
    ci_high: float
    only_reference_right: int  # McNemar's b
    only_challenger_right: int  # McNemar's c
    p_value: float  # exact two-sided McNemar

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA

    def words(self, name: str) -> str:
        """``real+synthetic: +1.2 points, 95% CI -0.3 to +2.6, McNemar p = 0.21: not significant``."""
        verdict = "significant" if self.significant else "not significant"
        return (f"{name}: {points(self.difference)} points, 95% CI {points(self.ci_low)} to {points(self.ci_high)}, "
                f"exact McNemar p {format_p(self.p_value)}: {verdict}")

    def to_dict(self) -> dict[str, float | int | bool]:
        return {**asdict(self), "significant": self.significant}


def points(fraction: float) -> str:
    """An accuracy difference in percentage points with its sign: 0.0123 -> '+1.2'."""
    value = 100.0 * fraction
    return f"{value:+.1f}" if round(value, 1) != 0 else "0.0"


def format_p(p: float) -> str:
    """'< 0.001' or '= 0.123' (with its relation, so it reads after 'p')."""
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def mcnemar_exact(reference_correct: np.ndarray, challenger_correct: np.ndarray) -> tuple[int, int, float]:
    """(b, c, two-sided exact p) from two boolean "was this image classified correctly" vectors."""
    ref = np.asarray(reference_correct, dtype=bool)
    chal = np.asarray(challenger_correct, dtype=bool)
    if ref.shape != chal.shape:
        raise ValueError(f"paired test needs the same images: {ref.shape} != {chal.shape}")
    b = int(np.sum(ref & ~chal))
    c = int(np.sum(~ref & chal))
    p = 1.0 if b + c == 0 else float(binomtest(c, b + c, 0.5, alternative="two-sided").pvalue)
    return b, c, p


def paired_bootstrap_ci(reference_correct: np.ndarray, challenger_correct: np.ndarray, resamples: int = 2000,
                        seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of mean(challenger) - mean(reference) over images resampled with replacement."""
    diff = np.asarray(challenger_correct, dtype=np.float64) - np.asarray(reference_correct, dtype=np.float64)
    n = len(diff)
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // n)  # bound memory: chunk x n indices at a time
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        means[start:stop] = diff[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def compare(y_true: np.ndarray, reference_pred: np.ndarray, challenger_pred: np.ndarray, resamples: int = 2000,
            seed: int = 0) -> PairedComparison:
    """Paired comparison of two label-prediction vectors on the same images."""
    y_true = np.asarray(y_true)
    ref = np.asarray(reference_pred) == y_true
    chal = np.asarray(challenger_pred) == y_true
    b, c, p = mcnemar_exact(ref, chal)
    low, high = paired_bootstrap_ci(ref, chal, resamples, seed)
    return PairedComparison(n=int(len(y_true)), accuracy_reference=float(ref.mean()),
                            accuracy_challenger=float(chal.mean()), difference=float(chal.mean() - ref.mean()),
                            ci_low=low, ci_high=high, only_reference_right=b, only_challenger_right=c, p_value=p)
