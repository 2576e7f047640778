"""The real-vs-synthetic LIME evidence says how many images each number rests on, with an interval or a refusal."""

from __future__ import annotations

import math

import numpy as np

from reports.sections.explanations import evidence_interval as _evidence_interval
from reports.lime_explain import MIN_EVIDENCE_IMAGES, correlation_interval


def _maps(n: int, seed: int, noise: float) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = np.zeros((8, 8), np.float32)
    base[2:5, 2:5] = 1.0
    return [base + noise * rng.standard_normal((8, 8)).astype(np.float32) for _ in range(n)]


def test_too_few_images_give_no_interval_and_the_report_says_why() -> None:
    few = MIN_EVIDENCE_IMAGES - 1
    low, high = correlation_interval(_maps(few, 0, 0.1), _maps(10, 1, 0.1), 0.2)
    assert math.isnan(low) and math.isnan(high)
    text = _evidence_interval({"n_real": few, "n_synthetic": 10, "correlation_low": low, "correlation_high": high})
    assert text.startswith(f"sample too small ({few} real, 10 synthetic images")


def test_the_interval_narrows_around_agreeing_maps_and_widens_with_noise() -> None:
    same = correlation_interval(_maps(8, 0, 0.0), _maps(8, 1, 0.0), 0.2)
    assert same == (1.0, 1.0)
    noisy = correlation_interval(_maps(8, 0, 1.0), _maps(8, 1, 1.0), 0.2)
    quiet = correlation_interval(_maps(8, 0, 0.2), _maps(8, 1, 0.2), 0.2)
    assert noisy[1] - noisy[0] > quiet[1] - quiet[0] > 0
    assert quiet[0] > 0.5  # the shared square dominates


def test_kid_without_a_spread_says_so_instead_of_a_false_zero() -> None:
    from reports.sections.quality import is_kid as _is_kid, plus_minus as _pm

    assert _pm(0.0123, None, spread_expected=True) == "0.012 ± n/a (one subset)"
    assert _pm(0.0123, 0.001) == "0.012 ± 0.001" and _pm(0.0123, None) == "0.012"
    assert _is_kid({"metric": "kid"}) and not _is_kid({"metric": "fd"})
