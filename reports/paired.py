"""Paired comparisons of classifiers scored on the same held-out images, corrected for their number.

Every arm is evaluated on the same held-out real images, so the right question is paired: on
how many images does one model get it right and the other wrong? For each comparison:

* a test of "no difference": the exact McNemar test when the images are independent (the number
  the challenger alone gets right is Binomial(b + c, 1/2); ``scipy.stats.binomtest``), and the
  clustered McNemar test of Durkalski et al. (Stat Med 2003) when images come in clusters (a
  patient's slices, a near-duplicate group): X = (sum_k (b_k - c_k))^2 / sum_k (b_k - c_k)^2 over
  clusters k, chi-square with one degree of freedom. Images of one patient are not independent
  evidence, and treating them so makes p-values too small;
* a paired bootstrap 95% interval of the accuracy difference (``scipy.stats.bootstrap``, percentile):
  clusters are resampled whole, both models' outcomes on an image travel together; the statistic is
  the pooled difference sum(d_k) / sum(n_k), so singletons give the plain image bootstrap;
* Holm's step-down correction across every comparison the answer shows
  (``statsmodels.stats.multitest.multipletests``): with four or more comparisons an uncorrected
  p of 0.03 is not evidence, and the answer says "not significant after correction" when so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy.stats import binomtest, bootstrap, chi2
from statsmodels.stats.multitest import multipletests

ALPHA = 0.05
EXACT, CLUSTERED = "exact McNemar", "clustered McNemar"


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
    p_value: float  # two-sided, uncorrected
    test: str = EXACT
    clusters: int = 0  # resampling units (= n without clusters)
    p_adjusted: float | None = None  # Holm-adjusted across ``comparisons``
    comparisons: int = 1

    @property
    def p_final(self) -> float:
        return self.p_value if self.p_adjusted is None else self.p_adjusted

    @property
    def significant(self) -> bool:
        return self.p_final < ALPHA

    def verdict(self) -> str:
        if self.comparisons > 1:
            return "significant after correction" if self.significant else "not significant after correction"
        return "significant" if self.significant else "not significant"

    def statistics(self) -> str:
        """``+1.2 points, 95% CI -0.3 to +2.6, exact McNemar p = 0.021, Holm-adjusted p = 0.063``."""
        text = (f"{points(self.difference)} points, 95% CI {points(self.ci_low)} to {points(self.ci_high)}, "
                f"{self.test} p {format_p(self.p_value)}")
        if self.comparisons > 1 and self.p_adjusted is not None:
            text += f", Holm-adjusted p {format_p(self.p_adjusted)}"
        return text

    def words(self, name: str) -> str:
        """``real+synthetic: +1.2 points, 95% CI -0.3 to +2.6, exact McNemar p = 0.21: not significant``."""
        return f"{name}: {self.statistics()}: {self.verdict()}"

    def to_dict(self) -> dict[str, object]:
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
    ref, chal = _pair(reference_correct, challenger_correct)
    b = int(np.sum(ref & ~chal))
    c = int(np.sum(~ref & chal))
    p = 1.0 if b + c == 0 else float(binomtest(c, b + c, 0.5, alternative="two-sided").pvalue)
    return b, c, p


def mcnemar_clustered(reference_correct: np.ndarray, challenger_correct: np.ndarray,
                      clusters: np.ndarray) -> tuple[int, int, float]:
    """(b, c, two-sided p) of Durkalski's clustered McNemar test (chi-square, 1 df)."""
    ref, chal = _pair(reference_correct, challenger_correct)
    _, inverse = np.unique(np.asarray(clusters).astype(str), return_inverse=True)
    b_k = np.bincount(inverse, weights=(ref & ~chal).astype(float))
    c_k = np.bincount(inverse, weights=(~ref & chal).astype(float))
    d = b_k - c_k
    denominator = float(np.sum(d ** 2))
    p = 1.0 if denominator == 0 else float(chi2.sf(float(np.sum(d)) ** 2 / denominator, df=1))
    return int(b_k.sum()), int(c_k.sum()), p


def paired_bootstrap_ci(reference_correct: np.ndarray, challenger_correct: np.ndarray, resamples: int = 2000,
                        seed: int = 0, level: float = 0.95, clusters: np.ndarray | None = None) -> tuple[float, float]:
    """Percentile interval of accuracy(challenger) - accuracy(reference), clusters (or images) resampled whole."""
    ref, chal = _pair(reference_correct, challenger_correct)
    diff = chal.astype(np.float64) - ref.astype(np.float64)
    if len(diff) == 0:
        return float("nan"), float("nan")
    if clusters is None:
        sums, sizes = diff, np.ones_like(diff)
    else:
        _, inverse = np.unique(np.asarray(clusters).astype(str), return_inverse=True)
        sums, sizes = np.bincount(inverse, weights=diff), np.bincount(inverse).astype(np.float64)
    if len(sums) < 2 or np.all(sums / sizes == sums[0] / sizes[0]):  # nothing varies: the interval is the value
        value = float(sums.sum() / sizes.sum())
        return value, value
    result = bootstrap((sums, sizes), _pooled_mean, paired=True, vectorized=True, n_resamples=resamples,
                       confidence_level=level, method="percentile", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _pooled_mean(sums: np.ndarray, sizes: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.sum(sums, axis=axis) / np.sum(sizes, axis=axis)


def compare(y_true: np.ndarray, reference_pred: np.ndarray, challenger_pred: np.ndarray, resamples: int = 2000,
            seed: int = 0, clusters: np.ndarray | None = None) -> PairedComparison:
    """Paired comparison of two label-prediction vectors on the same images (``clusters``: a group id per
    image, e.g. patient or near-duplicate group; None or all-distinct ids = independent images)."""
    y_true = np.asarray(y_true)
    ref = np.asarray(reference_pred) == y_true
    chal = np.asarray(challenger_pred) == y_true
    grouped = clusters is not None and len(np.unique(np.asarray(clusters).astype(str))) < len(y_true)
    if grouped:
        b, c, p = mcnemar_clustered(ref, chal, clusters)  # type: ignore[arg-type]
    else:
        b, c, p = mcnemar_exact(ref, chal)
    low, high = paired_bootstrap_ci(ref, chal, resamples, seed, clusters=clusters if grouped else None)
    units = len(np.unique(np.asarray(clusters).astype(str))) if grouped else int(len(y_true))
    return PairedComparison(n=int(len(y_true)), accuracy_reference=float(ref.mean()),
                            accuracy_challenger=float(chal.mean()), difference=float(chal.mean() - ref.mean()),
                            ci_low=low, ci_high=high, only_reference_right=b, only_challenger_right=c, p_value=p,
                            test=CLUSTERED if grouped else EXACT, clusters=units)


def holm(comparisons: Mapping[str, PairedComparison]) -> dict[str, PairedComparison]:
    """The same comparisons with Holm-adjusted p-values and their count (one comparison: unchanged)."""
    names = list(comparisons)
    if not names:
        return {}
    _, adjusted, _, _ = multipletests([comparisons[n].p_value for n in names], alpha=ALPHA, method="holm")
    return {name: replace(comparisons[name], p_adjusted=float(p), comparisons=len(names))
            for name, p in zip(names, adjusted)}


def _pair(reference_correct: np.ndarray, challenger_correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(reference_correct, dtype=bool)
    chal = np.asarray(challenger_correct, dtype=bool)
    if ref.shape != chal.shape:
        raise ValueError(f"paired test needs the same images: {ref.shape} != {chal.shape}")
    return ref, chal
