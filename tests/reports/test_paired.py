"""The paired comparison against the real-only arm: exact McNemar by hand, bootstrap on a constructed case."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

from reports.paired import compare, mcnemar_exact, paired_bootstrap_ci


def _outcomes(both: int, only_ref: int, only_chal: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    ref = np.array([1] * both + [1] * only_ref + [0] * only_chal + [0] * neither, dtype=bool)
    chal = np.array([1] * both + [0] * only_ref + [1] * only_chal + [0] * neither, dtype=bool)
    return ref, chal


@pytest.mark.parametrize(("b", "c", "expected"), [
    (1, 6, 2 * (comb(7, 0) + comb(7, 1)) / 2**7),  # 0.125
    (3, 12, 2 * sum(comb(15, k) for k in range(4)) / 2**15),  # 0.03515625
    (5, 5, 1.0),
    (0, 0, 1.0),
    (0, 9, 2 / 2**9),
])
def test_exact_mcnemar_equals_hand_computation(b: int, c: int, expected: float) -> None:
    ref, chal = _outcomes(40, b, c, 7)
    got_b, got_c, p = mcnemar_exact(ref, chal)
    assert (got_b, got_c) == (b, c)
    assert p == pytest.approx(min(1.0, expected), abs=1e-12)


def test_compare_on_fixed_predictions() -> None:
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    reference = np.array([0, 1, 2, 1, 0, 0, 0, 1, 2, 0])  # wrong on 3, 4, 5
    challenger = np.array([0, 1, 2, 0, 1, 2, 0, 1, 0, 0])  # wrong on 8 only
    result = compare(y, reference, challenger, resamples=500, seed=1)
    assert (result.only_reference_right, result.only_challenger_right) == (1, 3)
    assert result.p_value == pytest.approx(2 * (1 + 4) / 16)  # b=1, c=3: 2 * P(X <= 1), X ~ Bin(4, 1/2)
    assert result.difference == pytest.approx(0.2)
    assert result.accuracy_reference == pytest.approx(0.7) and result.accuracy_challenger == pytest.approx(0.9)
    assert not result.significant
    assert result.words("real+synthetic").startswith("real+synthetic: +20.0 points, 95% CI ")
    assert result.words("real+synthetic").endswith("exact McNemar p = 0.625: not significant")


def test_bootstrap_interval_covers_the_known_difference() -> None:
    ref, chal = _outcomes(300, 20, 80, 100)  # difference exactly +60/500 = +0.12
    low, high = paired_bootstrap_ci(ref, chal, resamples=2000, seed=3)
    assert low < 0.12 < high
    assert low > 0  # and it is clearly not noise
    assert (low, high) == paired_bootstrap_ci(ref, chal, resamples=2000, seed=3)  # seeded
    same = paired_bootstrap_ci(ref, ref, resamples=500, seed=3)
    assert same == (0.0, 0.0)


def test_mismatched_lengths_are_rejected() -> None:
    with pytest.raises(ValueError, match="same images"):
        mcnemar_exact(np.ones(3, bool), np.ones(4, bool))
