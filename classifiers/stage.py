"""The classifiers stage: every (arm, architecture, fold) fit, the fold ensembles, one results table.

What the pipeline runner calls::

    out = classifiers_stage(config, split_path, synthetic_manifest_path)
    out.results_path   # results.parquet (results.csv beside it), one row per
                       # (domain, arm, architecture, fold | "ensemble")
    out.summary["exports"][arm]["path"]   # export/<arm>/: the arm's model for timm.create_model

Named steps: ``read_inputs`` (split, classes, synthetic set, the arm tables, one FitSpec per arm x
architecture x fold, the stage key), ``plan_fits`` (the real-sample and arm manifests written and
decoded, the specs pointed at them), ``run_fit`` per spec,
``finish_stage``: each arm's architecture chosen on validation (classifiers.choice), then the one
read of the held-out images - every frozen fit scored on ``test`` (and ``dev``, with a development
split; classifiers.scoring) - then the results table, ensembles, summary and exports. The stage key
hashes the split, the synthetic set's content, the classifier settings and every fit's key (so the
folds as formed and the resolved weights reach it too); a complete key is returned from the store.
Fits are keyed by what they train on only (see classifiers.train), so a changed held-out set
rescores the same frozen fits, and changing the list of arms reuses every fit that did not change.
Arms that need synthetic data are skipped, with a note in the summary, when there is none.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from classifiers import zoo
from classifiers.choice import choose_per_arm
from pipeline.folds import assert_disjoint_from_test, fold_plans
from classifiers.export import export_arms
from classifiers.data import (AUGMENTED, NEEDS_SYNTHETIC, arm_file_name, arm_manifest, dev_manifest,
                              held_out_manifest, load_tensors, read_synthetic_manifest, real_sample_manifest)
from classifiers.metrics import ensemble_probabilities
from classifiers.scoring import DEV, TEST, EvaluationSet, evaluation_set, score_fits, set_metrics
from classifiers.train import FitResult, FitSpec, run_fit
from classifiers.weights import resolve_weights
from pipeline.config import DomainConfig, hash_payload
from pipeline.image_tensors import domain_cache_dir
from pipeline.split import Split
from pipeline.stages import load_split
from pipeline.store import RunStore, atomic_write_json, atomic_write_table, manifest_hash

STAGE = "classifiers"
ENSEMBLE = "ensemble"
# per-fold outcomes the ensemble row leaves empty rather than invent
_PER_FOLD = frozenset({"n_train", "n_val", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_hash",
                       "steps_run", "pretrain_steps", "samples_seen", "epochs_run", "best_step", "data_wait_share",
                       "seed"})
_INTEGER_COLUMNS = ("n_train", "n_val", "n_test", "n_dev", "val_synthetic", "step_budget", "steps_run", "pretrain_steps",
                    "min_steps", "samples_seen", "best_step", "seed")


@dataclass
class ClassifierOutput:
    key: str
    directory: Path
    results_path: Path  # parquet; a CSV copy sits beside it
    summary: dict[str, Any]
    cached: bool = False


@dataclass
class StageInputs:
    """What the stage reads: the split, its class order, the synthetic set (if any), the real sample and arm
    tables, one FitSpec per fit (manifest paths still empty: ``plan_fits`` writes them) and the stage key."""

    split: Split
    class_names: list[str]
    synthetic: pd.DataFrame | None
    key: str
    real: pd.DataFrame
    arms: dict[str, pd.DataFrame]
    specs: list[FitSpec]
    notes: list[str]


def classifiers_stage(config: DomainConfig, split_path: str | os.PathLike[str],
                      synthetic_manifest_path: str | os.PathLike[str] | None,
                      progress: bool = True) -> ClassifierOutput:
    """Train and evaluate the panel on every configured arm; reuse stored fits and results.

    The steps a scheduler runs separately (the Prefect flow fans the fits out): ``read_inputs``,
    ``plan_fits``, ``run_fit`` per spec, ``finish_stage``.
    """
    inputs = read_inputs(config, split_path, synthetic_manifest_path)
    store = RunStore(config.runs_root, config.name)
    directory = store.stage_dir(STAGE, inputs.key)
    if store.is_complete(STAGE, inputs.key):
        return ClassifierOutput(inputs.key, directory, directory / "results.parquet",
                                store.read_summary(STAGE, inputs.key), cached=True)
    started = time.perf_counter()
    specs, notes = plan_fits(config, inputs, directory, progress)
    results = [run_fit(spec, progress=progress)
               for spec in tqdm(specs, desc=f"{config.name} classifier fits", unit="fit", disable=not progress)]
    return finish_stage(config, inputs, directory, results, notes, time.perf_counter() - started)


def read_inputs(config: DomainConfig, split_path: str | os.PathLike[str],
                synthetic_manifest_path: str | os.PathLike[str] | None) -> StageInputs:
    """Check the panel, read the split and the synthetic manifest, and hash them into the stage key."""
    cc = config.classifiers
    zoo.check_architectures(cc.architectures)
    for name in cc.architectures:  # before any training: a size error after an hour helps nobody
        zoo.check_input_size(name, cc.image_size)
    split = load_split(split_path)
    class_names = config.data.resolve_class_names(split.table["label"])
    synthetic = (read_synthetic_manifest(synthetic_manifest_path, class_names)
                 if synthetic_manifest_path is not None else None)
    real = real_sample_manifest(split)
    arms, notes = {}, []
    for arm in cc.arms:
        if arm in NEEDS_SYNTHETIC and synthetic is None:
            notes.append(f"arm {arm!r} skipped: no synthetic manifest was given")
        else:
            arms[arm] = arm_manifest(arm, split, synthetic)
    specs = fit_specs(config, class_names, real, arms)
    settings = {k: v for k, v in cc.to_dict().items() if k != "checkpoints"}  # paths: fit keys hold the content
    key = hash_payload({"split_hash": split.split_hash,
                        "synthetic": manifest_hash(synthetic) if synthetic is not None else None,
                        "classifiers": settings, "folds": config.split.cv_folds, "seed": config.seed,
                        "mode": config.data.mode, "class_names": class_names, "fits": [s.key for s in specs],
                        "version": 3})
    return StageInputs(split, class_names, synthetic, key, real, arms, specs, notes)


def fit_specs(config: DomainConfig, class_names: list[str], real: pd.DataFrame, arms: dict[str, pd.DataFrame],
              architectures: list[str] | None = None) -> list[FitSpec]:
    """One FitSpec per (arm, architecture, fold): its key holds the fold's rows and the resolved weights.

    The key hashes content, never where the manifests are written (the paths stay empty here), so the
    reference stage (classifiers.reference, ``architectures`` = the reference's) and this stage plan the
    same ``real`` fits under the same keys."""
    cc = config.classifiers
    architectures = list(cc.architectures if architectures is None else architectures)
    weights = {name: resolve_weights(name, cc.pretrained, cc.checkpoints).key for name in architectures}
    real_hash = manifest_hash(real)
    specs = []
    for arm, table in arms.items():
        plans = fold_plans(table, real, config.split.cv_folds, config.seed, cc.validation)
        arm_hash = manifest_hash(table)
        for architecture in architectures:
            specs += [FitSpec(domain=config.name, arm=arm, architecture=architecture, fold=fold, arm_manifest_path="",
                              arm_hash=arm_hash, real_manifest_path="", real_hash=real_hash,
                              class_names=tuple(class_names), mode=config.data.mode, seed=config.seed,
                              config=cc.to_dict(), folds=config.split.cv_folds, fold_hash=plan.digest,
                              weights=weights[architecture], augment=arm in AUGMENTED,
                              runs_root=str(config.runs_root),
                              cache_dir=str(domain_cache_dir(config.runs_root, config.name)))
                      for fold, plan in enumerate(plans)]
    return specs


def plan_fits(config: DomainConfig, inputs: StageInputs, directory: Path, progress: bool
              ) -> tuple[list[FitSpec], list[str]]:
    """Write the real-sample and arm manifests (decoding each once) and point the FitSpecs at them.

    The held-out manifests are only compared by content hash here (no arm may hold a held-out image);
    their pixels are first read by ``finish_stage``, after every fit is frozen.
    """
    cc = config.classifiers
    cache_dir = domain_cache_dir(config.runs_root, config.name)
    held_out = pd.concat([held_out_manifest(inputs.split), dev_manifest(inputs.split)], ignore_index=True)
    real_path = directory / "real_sample.parquet"
    atomic_write_table(real_path, inputs.real, csv_copy=False)
    load_tensors(inputs.real, inputs.class_names, config.data.mode, cc.image_size, cache_dir, progress)
    assert_disjoint_from_test(inputs.real, held_out, "real sample")
    paths = {}
    for arm, table in inputs.arms.items():
        assert_disjoint_from_test(table, held_out, arm)
        paths[arm] = directory / "arms" / f"{arm_file_name(arm)}.parquet"
        atomic_write_table(paths[arm], table, csv_copy=False)
        load_tensors(table, inputs.class_names, config.data.mode, cc.image_size, cache_dir, progress)
    specs = [replace(spec, arm_manifest_path=str(paths[spec.arm]), real_manifest_path=str(real_path))
             for spec in inputs.specs]
    return specs, list(inputs.notes)


def evaluation_sets(config: DomainConfig, inputs: StageInputs, directory: Path) -> list[EvaluationSet]:
    """The held-out sets, written beside the results (test_manifest.parquet, dev_manifest.parquet) and decoded."""
    cache_dir = domain_cache_dir(config.runs_root, config.name)
    sets = []
    for name, table in ((TEST, held_out_manifest(inputs.split)), (DEV, dev_manifest(inputs.split))):
        if table.empty:
            continue
        atomic_write_table(directory / f"{name}_manifest.parquet", table, csv_copy=False)
        sets.append(evaluation_set(name, table, inputs.class_names, config.data.mode, config.classifiers.image_size,
                                   cache_dir))
    return sets


def finish_stage(config: DomainConfig, inputs: StageInputs, directory: Path, results: list[FitResult],
                 notes: list[str], seconds: float) -> ClassifierOutput:
    """Score the frozen fits on the held-out sets, then one results table (fold rows + ensembles), stored,
    summarised, exported, marked complete."""
    store = RunStore(config.runs_root, config.name)
    cc = config.classifiers
    results_path = directory / "results.parquet"
    sets = evaluation_sets(config, inputs, directory)  # the one read of held-out pixels and labels
    scores = score_fits(results, sets, directory, config.runs_root, config.name, cc.eval_batch_size)
    table = results_table(results, sets, scores, inputs.class_names)
    atomic_write_table(results_path, table)
    chosen = choose_per_arm(table, cc.select_on, cc.primary_architecture)
    summary = _summary(table, chosen, results, notes, seconds, {**cc.to_dict(), "folds": config.split.cv_folds})
    # timm-loadable: per arm, the chosen architecture's fold that is best on its validation fold
    architectures = {str(r.arm): str(r.architecture) for r in chosen.itertuples()}
    summary["exports"] = export_arms([r for r in results if architectures.get(r.metrics["arm"]) ==
                                      r.metrics["architecture"]], directory / "export", cc.select_on)
    atomic_write_json(directory / "summary.json", summary)
    store.mark_complete(STAGE, inputs.key, summary)
    store.latest_link(STAGE, inputs.key)
    return ClassifierOutput(inputs.key, directory, results_path, summary)


def results_table(results: list[FitResult], sets: list[EvaluationSet], scores: dict[str, dict[str, np.ndarray]],
                  class_names: list[str]) -> pd.DataFrame:
    """Fold rows (fit metrics + each held-out set's metrics), plus one ensemble row (mean fold probabilities)
    per (arm, architecture)."""

    def scored(keys: list[str]) -> dict[str, object]:
        out: dict[str, object] = {}
        for held_out in sets:
            probs = ensemble_probabilities([scores[held_out.name][k] for k in keys])
            out.update(set_metrics(held_out.name, held_out.labels, probs, class_names))
            out[f"n_{held_out.name}"] = int(len(held_out.labels))
        return out

    rows = [{**r.metrics, **scored([r.key])} for r in results]
    groups: dict[tuple[str, str], list[FitResult]] = {}
    for result in results:
        groups.setdefault((result.metrics["arm"], result.metrics["architecture"]), []).append(result)
    for (arm, architecture), members in groups.items():
        row = {}
        for column in members[0].metrics:  # a setting shared by every fold is kept; per-fold values are not
            values = [m.metrics.get(column) for m in members]
            row[column] = values[0] if column not in _PER_FOLD and all(v == values[0] for v in values) else None
        row.update({
            "fold": ENSEMBLE, "fit_key": ",".join(m.key for m in members),
            "pretrained_used": all(m.metrics["pretrained_used"] for m in members),
            "stopped_reason": ",".join(sorted({m.metrics["stopped_reason"] for m in members})),
            "time_budget_hit": any(m.metrics["time_budget_hit"] for m in members),
            "fit_seconds": round(sum(m.metrics["fit_seconds"] for m in members), 3),
            "data_seconds": round(sum(m.metrics["data_seconds"] for m in members), 3),
            **scored([m.key for m in members]),
        })
        rows.append(row)
    table = pd.DataFrame(rows)
    for column in _INTEGER_COLUMNS:
        if column in table:
            table[column] = table[column].astype("Int64")
    for column in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "data_wait_share", "epochs_run"):
        table[column] = table[column].astype("float64")
    return table.sort_values(["arm", "architecture", "fold"], kind="stable").reset_index(drop=True)


def _summary(table: pd.DataFrame, chosen: pd.DataFrame, results: list[FitResult], notes: list[str], seconds: float,
             settings: dict[str, Any]) -> dict[str, Any]:
    ensemble = table[table["fold"] == ENSEMBLE]
    weights_notes = sorted({r.metrics["pretrained_note"] for r in results if r.metrics["pretrained_note"]})
    budget_hits = [f"{r.metrics['arm']}/{r.metrics['architecture']}/fold{r.metrics['fold']}"
                   for r in results if r.metrics["time_budget_hit"]]
    if budget_hits:
        notes.append(f"time budget ({settings['time_budget_s']} s per fit) ended {len(budget_hits)} fit(s) early: "
                     f"{', '.join(budget_hits)}")
    # chosen on validation (classifiers.choice); the held-out numbers are the chosen model's score, not the reason
    chosen_per_arm = {str(r.arm): {"architecture": str(r.architecture), "chosen_by": str(r.chosen_by),
                                   "val_loss_mean": float(r.val_loss_mean), "val_accuracy_mean": float(r.val_accuracy_mean),
                                   "test_accuracy": float(r.test_accuracy), "f1_macro": float(r.f1_macro),
                                   **({"dev_accuracy": float(r.dev_accuracy)} if "dev_accuracy" in chosen else {})}
                      for r in chosen.itertuples()}
    return {
        "fits": len(results), "fits_reused": sum(r.cached for r in results), "seconds": round(seconds, 1),
        "arms": sorted(ensemble["arm"].unique().tolist()), "chosen_per_arm": chosen_per_arm,
        "evaluation_sets": sorted({c[len("n_"):] for c in table.columns if c in ("n_test", "n_dev")}),
        "ensemble_accuracy": {f"{r.arm}/{r.architecture}": float(r.test_accuracy) for r in ensemble.itertuples()},
        "notes": notes + weights_notes, "settings": settings,
    }
