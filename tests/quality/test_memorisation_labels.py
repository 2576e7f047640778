"""Memorisation flags planted copies, not fresh samples; label consistency on fixed predictions."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.quality.labels import label_consistency
from pipeline.quality.memorisation import check_space, flagged_per_class


def test_planted_copies_are_flagged_and_fresh_samples_are_not() -> None:
    rng = np.random.default_rng(0)
    training = rng.normal(size=(300, 16))
    fresh = rng.normal(size=(100, 16))  # the same distribution, never seen
    planted = training[:10] + rng.normal(scale=1e-3, size=(10, 16))  # near-exact copies
    synthetic = np.concatenate([fresh, planted])
    for space in ("pixel", "feature"):
        result = check_space(synthetic, training, space, quantile=0.01)
        assert result.flagged[100:].all()
        assert result.flagged[:100].mean() <= 0.03  # ~ the quantile by construction
        assert (result.neighbour[100:] == np.arange(10)).all()


def test_near_duplicate_groups_do_not_calibrate_the_threshold_to_zero() -> None:
    rng = np.random.default_rng(1)
    training = rng.normal(size=(100, 16))
    training[50:60] = training[40:50]  # ten exact copies inside the training set
    groups = [None] * 100
    for i in range(10):
        groups[40 + i] = groups[50 + i] = f"g{i}"
    with_groups = check_space(rng.normal(size=(50, 16)), training, "pixel", 0.01, groups)
    without = check_space(rng.normal(size=(50, 16)), training, "pixel", 0.01, None)
    assert without.threshold == 0.0 and with_groups.threshold > 0.1


def test_flagged_fraction_per_class() -> None:
    out = flagged_per_class(np.array(["a", "a", "b", "b", "b"]), np.array([True, False, False, False, True]), ["a", "b"])
    assert out == {"a": {"images": 2, "flagged": 1, "fraction": 0.5}, "b": {"images": 3, "flagged": 1, "fraction": 1 / 3}}


def test_label_consistency_equals_the_hand_computed_value() -> None:
    probabilities = np.array([[0.9, 0.1, 0.0],   # requested 0, predicted 0
                              [0.2, 0.7, 0.1],   # requested 0, predicted 1 (confident, wrong)
                              [0.1, 0.8, 0.1],   # requested 1, predicted 1
                              [0.3, 0.3, 0.4],   # requested 1, predicted 2 (unsure, wrong)
                              [0.0, 0.1, 0.9],   # requested 2, predicted 2
                              [0.1, 0.0, 0.9]])  # requested 2, predicted 2
    requested = np.array([0, 0, 1, 1, 2, 2])
    result = label_consistency(probabilities, requested, ["a", "b", "c"])
    assert result.per_class == {"a": 0.5, "b": 0.5, "c": 1.0}
    assert result.cas == pytest.approx(2 / 3)
    assert result.overall == pytest.approx(4 / 6)
    assert result.confusion == [[1, 1, 0], [0, 1, 1], [0, 0, 2]]
    assert result.confidently_wrong(requested, 0.6).tolist() == [False, True, False, False, False, False]
    assert not result.confidently_wrong(requested, None).any()


def test_gu_ratio_calls_a_copy_a_copy_and_a_point_between_two_images_fresh() -> None:
    """Training points 0, 10 and 30 on a line: a synthetic point at 0.5 is 0.5 from its nearest and 9.5 from its
    second (ratio 0.053: a copy); one at 5 is 5 from both (ratio 1: fresh); one at 3 has ratio 3/7 (not a copy)."""
    training = np.array([[0.0], [10.0], [30.0]])
    synthetic = np.array([[0.5], [5.0], [3.0]])
    result = check_space(synthetic, training, "pixel", quantile=0.01)
    np.testing.assert_allclose(result.ratio, [0.5 / 9.5, 1.0, 3.0 / 7.0], rtol=1e-6)
    assert result.copies.tolist() == [True, False, False]
