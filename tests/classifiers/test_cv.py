"""CV folds: stratified, deterministic, disjoint; the held-out real set never enters an arm (content hash)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from classifiers.cv import assert_disjoint_from_test, fold_indices, groups_of
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
