"""CV folds: stratified, deterministic, disjoint; patients and near-duplicate groups kept whole."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.folds import fold_indices, groups_of
from pipeline.errors import DataError


def test_folds_stratified_deterministic_disjoint() -> None:
    labels = np.repeat([0, 1, 2], [40, 25, 10])
    folds = fold_indices(labels, None, 5, seed=7)
    assert len(folds) == 5
    val_all = np.concatenate([v for _, v in folds])
    assert sorted(val_all.tolist()) == list(range(len(labels)))  # every row validates exactly once
    for train, val in folds:
        assert not set(train) & set(val)
        assert np.bincount(labels[val], minlength=3).tolist() == [8, 5, 2]  # class ratio kept in every fold
    again = fold_indices(labels, None, 5, seed=7)
    assert all((a[1] == b[1]).all() for a, b in zip(folds, again))
    other = fold_indices(labels, None, 5, seed=8)
    assert any((a[1] != b[1]).any() for a, b in zip(folds, other))


def test_patient_groups_never_straddle_folds() -> None:
    table = pd.DataFrame({"sha256": [f"h{i}" for i in range(60)], "label": ["x", "y"] * 30,
                          "patient_id": [f"p{i // 3}" for i in range(60)]})
    groups = groups_of(table)
    for train, val in fold_indices(table["label"].to_numpy(), groups, 4, seed=0):
        assert not set(groups[train]) & set(groups[val])


def test_near_duplicate_groups_never_straddle_folds() -> None:
    """Copies of one slice (``dup_group`` from ingest) stay on one side of every fold; singletons are free."""
    dup = [f"nd-{i // 4}" if i < 40 else None for i in range(80)]
    table = pd.DataFrame({"sha256": [f"h{i}" for i in range(80)], "label": ["x", "y"] * 40, "dup_group": dup})
    groups = groups_of(table)
    assert groups is not None and len(set(groups[40:])) == 40  # images without a near copy are their own group
    for train, val in fold_indices(table["label"].to_numpy(), groups, 4, seed=0):
        assert not set(groups[train]) & set(groups[val])
    assert groups_of(table.assign(dup_group=None)) is None


def test_a_near_copy_links_two_patients() -> None:
    """Patient p1 (a, b), a copy of b filed under p2 (c, d): all four are one group; e stays alone."""
    table = pd.DataFrame({"sha256": list("abcde"), "label": ["x"] * 5,
                          "patient_id": ["p1", "p1", "p2", "p2", None],
                          "dup_group": [None, "nd-1", "nd-1", None, None]})
    groups = groups_of(table)
    assert len(set(groups[:4])) == 1 and groups[4] not in set(groups[:4])


def test_too_few_images_for_folds_is_a_clear_error() -> None:
    with pytest.raises(DataError, match="at least 5 images per class"):
        fold_indices(np.array([0] * 10 + [1] * 3), None, 5, seed=0)
