"""CV folds: stratified, deterministic, disjoint; the held-out real set never enters an arm (content hash)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.folds import assert_disjoint_from_test, fold_indices, groups_of
from classifiers.data import arm_manifest, held_out_manifest, read_synthetic_manifest
from pipeline.config import DomainConfig
from pipeline.errors import DataError, LeakageError
from pipeline.stages import load_split


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


def test_held_out_set_never_in_any_arm(demo_split: tuple[DomainConfig, Path], synthetic_manifest: Path) -> None:
    config, split_path = demo_split
    split = load_split(split_path)
    test = held_out_manifest(split)
    synthetic = read_synthetic_manifest(synthetic_manifest, list(config.data.class_names))
    held_out = set(test["sha256"])
    for arm in ("synthetic", "real", "real+aug", "real+synthetic"):
        table = arm_manifest(arm, split, synthetic)
        assert_disjoint_from_test(table, test, arm)
        for train, val in fold_indices(table["label"].to_numpy(), groups_of(table), 3, config.seed):
            assert not held_out & set(table["sha256"].iloc[train]) and not held_out & set(table["sha256"].iloc[val])
    assert len(arm_manifest("real+synthetic", split, synthetic)) == len(split.train) + len(synthetic)


def test_leak_is_refused(demo_split: tuple[DomainConfig, Path]) -> None:
    config, split_path = demo_split
    split = load_split(split_path)
    test = held_out_manifest(split)
    leaky = pd.concat([arm_manifest("real", split, None), test.iloc[:1]], ignore_index=True)
    with pytest.raises(LeakageError, match="held-out real test set"):
        assert_disjoint_from_test(leaky, test, "real")
