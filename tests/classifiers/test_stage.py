"""The stage end to end on phantom data: tidy table, cached fits, skips, the time-budget safety net."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from classifiers.stage import ENSEMBLE, classifiers_stage
from pipeline.config import DEFAULT_ARMS, DomainConfig
from pipeline.errors import ConfigError

from clf_helpers import FIVE_ARM_STEPS, demo_config


def test_all_arms_table_cache_and_skips(demo_split: tuple[DomainConfig, Path], five_arms: tuple[DomainConfig, Path],
                                        synthetic_manifest: Path) -> None:
    _, split_path = demo_split
    config, results_path = five_arms
    table = pd.read_parquet(results_path)
    assert Path(results_path).with_suffix(".csv").is_file()
    assert set(table["arm"]) == set(DEFAULT_ARMS) and len(DEFAULT_ARMS) == 5
    assert len(table) == 5 * 3 and not table.duplicated(["domain", "arm", "architecture", "fold"]).any()
    for column in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy",
                   "precision_macro", "recall_weighted", "f1_macro", "f1[ring]", "roc_auc_ovr", "confusion_matrix",
                   "stopped_reason", "pretrained_used", "steps_run", "step_budget", "best_step", "validation"):
        assert column in table
    folds = table[table["fold"] != ENSEMBLE]
    assert folds["train_loss"].notna().all() and (folds["steps_run"] == FIVE_ARM_STEPS).all()
    assert (folds["stopped_reason"] == "max_steps").all()
    ensemble = table[table["fold"] == ENSEMBLE]
    assert (ensemble["step_budget"] == FIVE_ARM_STEPS).all() and ensemble["steps_run"].isna().all()

    again = classifiers_stage(config, split_path, synthetic_manifest, progress=False)
    assert again.cached and again.results_path == results_path

    # Another arm list is another stage key, but every fit it needs is found by its own key.
    subset = config.model_copy(update={"classifiers": config.classifiers.model_copy(
        update={"arms": ["real", "synthetic"]})})
    reused = classifiers_stage(subset, split_path, None, progress=False)
    assert reused.summary["fits_reused"] == reused.summary["fits"] == 2
    assert any("'synthetic' skipped" in note for note in reused.summary["notes"])


def test_time_budget_is_a_reported_safety_net(demo_split: tuple[DomainConfig, Path], tmp_path: Path) -> None:
    _, split_path = demo_split
    config = demo_config(tmp_path, architectures=["resnet18"], arms=["real"], image_size=32, folds=2,
                         max_steps=5000, min_steps=5000, time_budget_s=0.5)
    out = classifiers_stage(config, split_path, None, progress=False)
    table = pd.read_parquet(out.results_path)
    folds = table[table["fold"] != ENSEMBLE]
    assert (folds["stopped_reason"] == "time_budget").all() and folds["time_budget_hit"].all()
    assert (folds["steps_run"] < 5000).all() and folds["test_accuracy"].notna().all()
    assert any("time budget" in note for note in out.summary["notes"])


def test_too_small_input_fails_before_training(demo_split: tuple[DomainConfig, Path], tmp_path: Path) -> None:
    _, split_path = demo_split
    config = demo_config(tmp_path, architectures=["resnet18", "alexnet"], image_size=32)
    with pytest.raises(ConfigError, match="alexnet"):
        classifiers_stage(config, split_path, None, progress=False)
    assert not list((tmp_path / "runs").rglob("model.pt"))
