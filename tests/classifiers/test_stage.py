"""The stage end to end on phantom data: above chance on the held-out set, tidy table, cached fits."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from classifiers.stage import ENSEMBLE, classifiers_stage
from pipeline.config import DomainConfig
from pipeline.errors import ConfigError

from clf_helpers import demo_config, make_split

CHANCE = 0.25  # four balanced phantom classes
MIN_ACCURACY = 0.40  # measured ~0.55 (resnet18, 32 px, 240 training images, 12 epochs, 3 folds)


def test_trained_classifier_is_clearly_above_chance(tmp_path: Path) -> None:
    config = demo_config(tmp_path, architectures=["resnet18"], arms=["real"], image_size=32, folds=3,
                         max_epochs=12, patience=12, learning_rate=1e-3, batch_size=32)
    split_path = make_split(config, per_class=300)
    out = classifiers_stage(config, split_path, None, progress=False)
    table = pd.read_parquet(out.results_path)
    ensemble = table[table["fold"] == ENSEMBLE].iloc[0]
    print(f"held-out accuracy: ensemble {ensemble.test_accuracy:.3f}, folds "
          f"{table[table.fold != ENSEMBLE].test_accuracy.round(3).tolist()} (chance {CHANCE})")
    assert ensemble.test_accuracy >= MIN_ACCURACY
    assert ensemble.n_test == 960 and set(table["fold"]) == {"0", "1", "2", ENSEMBLE}


def test_all_arms_table_cache_and_skips(demo_split: tuple[DomainConfig, Path], synthetic_manifest: Path,
                                        tmp_path: Path) -> None:
    base, split_path = demo_split
    config = demo_config(Path(base.runs_root).parent, architectures=["resnet18"], image_size=32, folds=2,
                         max_epochs=2, patience=2)
    out = classifiers_stage(config, split_path, synthetic_manifest, progress=False)
    table = pd.read_parquet(out.results_path)
    assert Path(out.results_path).with_suffix(".csv").is_file()
    assert set(table["arm"]) == {"synthetic", "real", "real+aug", "real+synthetic"}
    assert len(table) == 4 * 3 and not table.duplicated(["domain", "arm", "architecture", "fold"]).any()
    for column in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy",
                   "precision_macro", "recall_weighted", "f1_macro", "f1[ring]", "roc_auc_ovr", "confusion_matrix",
                   "stopped_reason", "pretrained_used"):
        assert column in table
    folds = table[table["fold"] != ENSEMBLE]
    assert folds["train_loss"].notna().all() and (folds["epochs_run"] <= 2).all()
    assert out.summary["fits"] == 8 and out.summary["fits_reused"] == 0

    again = classifiers_stage(config, split_path, synthetic_manifest, progress=False)
    assert again.cached and again.key == out.key

    # Another arm list is another stage key, but every fit it needs is found by its own key.
    subset = demo_config(Path(base.runs_root).parent, architectures=["resnet18"], image_size=32, folds=2,
                         max_epochs=2, patience=2, arms=["real", "synthetic"])
    reused = classifiers_stage(subset, split_path, None, progress=False)
    assert reused.summary["fits_reused"] == reused.summary["fits"] == 2
    assert any("'synthetic' skipped" in note for note in reused.summary["notes"])


def test_time_budget_stops_gracefully_and_is_recorded(demo_split: tuple[DomainConfig, Path], tmp_path: Path) -> None:
    _, split_path = demo_split
    config = demo_config(tmp_path, architectures=["resnet18"], arms=["real"], image_size=32, folds=2,
                         max_epochs=50, patience=50, time_budget_s=0.5)
    out = classifiers_stage(config, split_path, None, progress=False)
    table = pd.read_parquet(out.results_path)
    folds = table[table["fold"] != ENSEMBLE]
    assert (folds["stopped_reason"] == "time_budget").all() and folds["time_budget_hit"].all()
    assert (folds["epochs_run"] < 50).all() and folds["test_accuracy"].notna().all()
    assert any("time budget" in note for note in out.summary["notes"])


def test_too_small_input_fails_before_training(demo_split: tuple[DomainConfig, Path], tmp_path: Path) -> None:
    _, split_path = demo_split
    config = demo_config(tmp_path, architectures=["resnet18", "alexnet"], image_size=32)
    with pytest.raises(ConfigError, match="alexnet"):
        classifiers_stage(config, split_path, None, progress=False)
    assert not list((tmp_path / "runs").rglob("model.pt"))
