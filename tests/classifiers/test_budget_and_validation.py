"""Issue 8: one step budget for every arm, model selection on real images only, synthetic->real in two phases.

All assertions read the fit records the stage writes (metrics.json, record.json), not the config.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.folds import fold_plan
from classifiers.data import held_out_manifest, real_sample_manifest
from classifiers.stage import ENSEMBLE, classifiers_stage
from pipeline.config import DEFAULT_ARMS, DomainConfig
from pipeline.stages import load_split
from pipeline.store import read_json

from clf_helpers import FIVE_ARM_STEPS, demo_config

STEPS = FIVE_ARM_STEPS


def fit_records(results_path: Path) -> list[tuple[dict, dict]]:
    """(metrics, record) of every fit of a stage run, read from the fits' own folders."""
    table = pd.read_parquet(results_path)
    runs = Path(results_path).parents[3]  # <runs>/<domain>/classifiers/<key>/results.parquet
    out = []
    for key in table.loc[table["fold"] != ENSEMBLE, "fit_key"]:
        [folder] = list(runs.glob(f"*/classifier-fits/{key}"))
        out.append((read_json(folder / "metrics.json"), read_json(folder / "record.json")))
    return out


def test_every_arm_gets_the_same_optimizer_steps(five_arms: tuple[DomainConfig, Path]) -> None:
    _, results_path = five_arms
    records = fit_records(results_path)
    assert {m["arm"] for m, _ in records} == set(DEFAULT_ARMS) and len(records) == len(DEFAULT_ARMS) * 2
    steps = {(m["arm"], m["fold"]): m["steps_run"] for m, _ in records}
    assert set(steps.values()) == {STEPS}, steps  # synthetic (80 images) and real (20 per fold) alike
    assert {m["step_budget"] for m, _ in records} == {STEPS}
    n_train = {m["arm"]: m["n_train"] for m, _ in records}
    assert n_train["synthetic"] > 3 * n_train["real"]  # very different data sizes, one budget


def test_synthetic_to_real_runs_both_phases_in_the_one_budget(five_arms: tuple[DomainConfig, Path]) -> None:
    _, results_path = five_arms
    for metrics, record in fit_records(results_path):
        phases = {p["name"]: p for p in record["phases"]}
        if metrics["arm"] != "synthetic->real":
            assert list(phases) == ["train"] and metrics["pretrain_steps"] == 0
            continue
        assert list(phases) == ["pretrain", "finetune"]
        assert phases["pretrain"]["steps_run"] == metrics["pretrain_steps"] == STEPS // 2
        assert phases["finetune"]["steps_run"] == STEPS - STEPS // 2
        assert not phases["pretrain"]["selects"] and phases["finetune"]["selects"]
        assert metrics["best_step"] > metrics["pretrain_steps"]  # the selected weights saw real images
        assert phases["pretrain"]["rows"] == 80 and phases["finetune"]["rows"] == metrics["n_train"] - 80


def test_model_selection_reads_only_real_validation_images(demo_split: tuple[DomainConfig, Path],
                                                          synthetic_manifest: Path,
                                                          five_arms: tuple[DomainConfig, Path]) -> None:
    _, split_path = demo_split
    split = load_split(split_path)
    real = real_sample_manifest(split)
    real_hashes, test_hashes = set(real["sha256"]), set(held_out_manifest(split)["sha256"])
    synthetic_hashes = set(pd.read_parquet(synthetic_manifest)["sha256"])
    by_fold: dict[str, set[frozenset]] = {}
    for metrics, record in fit_records(five_arms[1]):
        val = record["validation"]
        used = set(val["sha256"])
        assert val["table"] == "real" and metrics["val_synthetic"] == 0
        assert used <= real_hashes and not used & synthetic_hashes and not used & test_hashes
        assert real["sha256"].iloc[val["indices"]].tolist() == val["sha256"]  # indices and hashes agree
        by_fold.setdefault(metrics["fold"], set()).add(frozenset(used))
    assert all(len(sets) == 1 for sets in by_fold.values())  # fold k validates every arm on the same images
    assert not set.intersection(*[set(s) for [s] in by_fold.values()])  # and the folds are disjoint


def test_old_protocol_is_selectable_and_shows_what_was_wrong(demo_split: tuple[DomainConfig, Path],
                                                             synthetic_manifest: Path) -> None:
    """budget: epochs + validation: arm give the starved synthetic arm and synthetic validation images."""
    base, split_path = demo_split
    config = demo_config(Path(base.runs_root).parent, image_size=32, folds=2, batch_size=16, budget="epochs",
                         max_epochs=1, patience=1, validation="arm", arms=["synthetic", "real"])
    out = classifiers_stage(config, split_path, synthetic_manifest, progress=False)
    records = fit_records(out.results_path)
    steps = {m["arm"]: m["steps_run"] for m, _ in records}
    assert steps["synthetic"] != steps["real"]  # epochs: the step count follows the arm's data size
    synthetic_hashes = set(pd.read_parquet(synthetic_manifest)["sha256"])
    for metrics, record in records:
        assert record["validation"]["table"] == "arm"
        if metrics["arm"] == "synthetic":
            assert set(record["validation"]["sha256"]) <= synthetic_hashes and metrics["val_synthetic"] > 0


def test_fold_plan_keeps_validation_images_and_their_seeds_and_patients_out_of_training() -> None:
    real = pd.DataFrame({"sha256": [f"r{i:02d}" for i in range(12)], "label": ["a", "b"] * 6,
                         "patient_id": [f"p{i // 2}" for i in range(12)], "source": "real"})
    synthetic = pd.DataFrame({"sha256": [f"s{i:02d}" for i in range(12)], "label": ["a", "b"] * 6,
                              "patient_id": None, "source": "synthetic",
                              "seed_sha256": [f"r{i:02d}" for i in range(12)]})  # real-seeded: one per real image
    arm = pd.concat([real, synthetic], ignore_index=True)
    plan = fold_plan(arm, real, fold=0, folds=3, seed=1, validation="real")
    val = set(real["sha256"].iloc[plan.val])
    val_patients = set(real["patient_id"].iloc[plan.val])
    train = arm.iloc[plan.train]
    assert plan.val_table == "real" and len(val) == 4
    assert not set(train["sha256"]) & val and not set(train["seed_sha256"].dropna()) & val
    assert not set(train["patient_id"].dropna()) & val_patients
    assert len(train) == 24 - 4 - 4  # the 4 validation images and the 4 synthetic images seeded from them
    arm_plan = fold_plan(arm, real, fold=0, folds=3, seed=1, validation="arm")
    assert arm_plan.val_table == "arm" and np.isin(arm_plan.val, np.arange(24)).all()
