"""Reading a finished run's files for the report: its config, results table, stored predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from classifiers.choice import choose_per_arm
from pipeline.config import DomainConfig, from_dict
from pipeline.folds import groups_of

def run_config_of(text: str) -> DomainConfig | None:
    if not text:
        return None
    try:
        return from_dict(DomainConfig, yaml.safe_load(text), source="config.yaml")
    except Exception:  # a run written by an older/newer code version: render without its typed config
        return None


def results_table(stages: dict[str, Any]) -> pd.DataFrame | None:
    path = stages.get("classifiers", {}).get("results")
    if not path or not Path(path).with_suffix(".parquet").is_file():
        return None
    table = pd.read_parquet(Path(path).with_suffix(".parquet"))
    table["fold"] = table["fold"].astype(str)
    return table


def fits_dir_of(stages: dict[str, Any]) -> Path | None:
    path = stages.get("classifiers", {}).get("results")
    return Path(path).parents[2] / "classifier-fits" if path else None


def chosen_ensembles(results: pd.DataFrame, config: DomainConfig | None = None) -> pd.DataFrame:
    """Per arm, the fold ensemble of the architecture chosen on validation (classifiers.choice), never on
    held-out results: the config's primary architecture, or the best mean validation result by select_on."""
    cc = config.classifiers if config is not None else None
    return choose_per_arm(results, cc.select_on if cc else "val_loss", cc.primary_architecture if cc else None)


def scores_dir_of(stages: dict[str, Any], set_name: str = "test") -> Path | None:
    """Where the fits' stored probabilities on the ``test`` (or ``dev``) images lie."""
    path = stages.get("classifiers", {}).get("results")
    return Path(path).parent / "scores" / set_name if path else None


def ensemble_predictions(scores_dir: Path, fit_keys: str) -> np.ndarray | None:
    probs = []
    for key in str(fit_keys).split(","):
        path = scores_dir / f"{key}.npy"
        if not path.is_file():
            return None
        probs.append(np.load(path))
    return np.mean(np.stack(probs), axis=0).argmax(axis=1)


def held_out_labels(stages: dict[str, Any], results: pd.DataFrame, set_name: str = "test"
                    ) -> tuple[np.ndarray, np.ndarray | None] | None:
    """(label indices, cluster ids or None) of the held-out ``test`` (or ``dev``) images, in scoring order."""
    manifest = Path(stages["classifiers"]["results"]).parent / f"{set_name}_manifest.parquet"
    if not manifest.is_file():
        return None
    class_names = class_names_of(results)
    table = pd.read_parquet(manifest)
    labels = np.array([class_names.index(str(label)) for label in table["label"]])
    return labels, groups_of(table)


def class_names_of(results: pd.DataFrame) -> list[str]:
    return [c[len("support["):-1] for c in results.columns if c.startswith("support[")]
