"""No arm holds a held-out image: arm tables are checked against the held-out side by content hash."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from classifiers.data import arm_manifest, held_out_manifest, read_synthetic_manifest
from pipeline.config import DomainConfig
from pipeline.errors import LeakageError
from pipeline.folds import assert_disjoint_from_test, fold_indices, groups_of
from pipeline.stages import load_split


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
