"""Which model speaks for each arm: chosen on validation (CV) results, never on held-out ones.

    chosen = choose_per_arm(results, select_on="val_loss", primary=None)   # one row per arm
    fold_row = best_fold(results, arm, architecture, select_on)           # the single fit LIME explains

An arm's answer is the fold ensemble of one architecture:

- ``classifiers.primary_architecture`` when the config declares one: a planned comparison, the
  same architecture for every arm, nothing chosen at all;
- otherwise the architecture whose folds have the best mean validation result by
  ``classifiers.select_on`` (the lowest mean validation loss, or the highest mean validation
  accuracy with the lower mean loss breaking ties; then the panel's order). Under ``validation:
  real`` every arm and architecture is validated on the same real folds, so the means compare.

Picking the architecture with the best *held-out* score and then testing it on those same images
would overstate every arm (a winner's curse that grows with the panel: 8 architectures in the gpu
profile), which is exactly what this module exists to prevent.
"""

from __future__ import annotations

import math

import pandas as pd

from classifiers.early_stopping import Monitor, selection_key

ENSEMBLE = "ensemble"


def choose_per_arm(results: pd.DataFrame, select_on: Monitor = "val_loss",
                   primary: str | None = None) -> pd.DataFrame:
    """The ensemble row of each arm's chosen architecture, plus ``chosen_by``, ``val_loss_mean``, ``val_accuracy_mean``."""
    folds = results[results["fold"].astype(str) != ENSEMBLE]
    ensembles = results[results["fold"].astype(str) == ENSEMBLE]
    order = {name: i for i, name in enumerate(pd.unique(results["architecture"]))}
    rows = []
    for arm, members in folds.groupby("arm", sort=True):
        summary = (members.groupby("architecture", sort=False)
                   .agg(val_loss_mean=("val_loss", "mean"), val_accuracy_mean=("val_accuracy", "mean"))
                   .reset_index())
        if primary is not None and primary in set(summary["architecture"]):
            pick, how = summary[summary["architecture"] == primary].iloc[0], "primary architecture (config)"
        else:
            ranked = sorted(summary.itertuples(index=False), key=lambda r: (
                *selection_key(_finite(r.val_loss_mean, math.inf), _finite(r.val_accuracy_mean, 0.0), select_on),
                order.get(r.architecture, 0)))
            pick = pd.Series(ranked[0]._asdict())
            how = ("lowest mean validation loss over folds" if select_on == "val_loss"
                   else "highest mean validation accuracy over folds (then lower loss)")
        ensemble = ensembles[(ensembles["arm"] == arm) & (ensembles["architecture"] == pick["architecture"])]
        if ensemble.empty:
            continue
        row = ensemble.iloc[0].copy()
        row["chosen_by"] = how
        row["val_loss_mean"] = float(pick["val_loss_mean"])
        row["val_accuracy_mean"] = float(pick["val_accuracy_mean"])
        rows.append(row)
    return pd.DataFrame(rows).reset_index(drop=True)


def best_fold(results: pd.DataFrame, arm: str, architecture: str, select_on: Monitor = "val_loss") -> pd.Series:
    """The single fold fit of (arm, architecture) that is best on its validation fold (the exported one)."""
    folds = results[(results["fold"].astype(str) != ENSEMBLE) & (results["arm"] == arm)
                    & (results["architecture"] == architecture)]
    if folds.empty:
        raise ValueError(f"no fold fits for arm {arm!r}, architecture {architecture!r}")
    ranked = sorted(range(len(folds)), key=lambda i: (
        *selection_key(_finite(folds["val_loss"].iloc[i], math.inf), _finite(folds["val_accuracy"].iloc[i], 0.0),
                       select_on), i))
    return folds.iloc[ranked[0]]


def _finite(value: object, worst: float) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return worst
    return number if math.isfinite(number) else worst
