"""Scoring frozen fits on held-out real images: the one place in the pipeline that reads them.

A fit is trained, and its step chosen, on the real sample's folds alone (classifiers.train); which
architecture speaks for an arm is chosen on validation too (classifiers.choice). Only then does the
classifiers stage hand the frozen fits to ``score_fits`` with the held-out sets:

    test   the held-out real images (the study's 80%, less any development share): the final answer
    dev    ``split.dev_fraction`` > 0 only: the development share, on which benchmarks choose defaults

Probabilities are stored under the classifiers stage's folder, ``scores/<set>/<fit_key>.npy``; the
results table, the report's paired tests and LIME's choice of images all read them from there, so
nothing upstream of this step depends on a held-out label or pixel (tests/test_test_set_isolation.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from classifiers.data import load_tensors
from classifiers.metrics import classification_metrics
from classifiers.predict import load_fit
from classifiers.train import FitResult
from pipeline.store import atomic_save_with

TEST, DEV = "test", "dev"
EVAL_SETS = (TEST, DEV)


@dataclass
class EvaluationSet:
    """One held-out set: its manifest (canonical order), decoded images and label indices."""

    name: str  # test | dev
    manifest: pd.DataFrame
    images: torch.Tensor
    labels: np.ndarray


def evaluation_set(name: str, manifest: pd.DataFrame, class_names: list[str], mode: str, size: int,
                   cache_dir: str | Path) -> EvaluationSet:
    images, labels = load_tensors(manifest, class_names, mode, size, cache_dir)
    return EvaluationSet(name, manifest, images, labels.numpy())


def scores_path(stage_dir: Path, set_name: str, fit_key: str) -> Path:
    return Path(stage_dir) / "scores" / set_name / f"{fit_key}.npy"


def score_fits(fits: list[FitResult], sets: list[EvaluationSet], stage_dir: Path, runs_root: str | Path,
               domain: str, batch_size: int = 128) -> dict[str, dict[str, np.ndarray]]:
    """{set name: {fit key: (N, K) probabilities}}; stored probabilities are reused, missing ones computed."""
    out: dict[str, dict[str, np.ndarray]] = {s.name: {} for s in sets}
    for fit in fits:
        classifier = None
        for held_out in sets:
            path = scores_path(stage_dir, held_out.name, fit.key)
            if path.is_file():
                probs = np.load(path)
                if probs.shape[0] == len(held_out.labels):
                    out[held_out.name][fit.key] = probs
                    continue
            classifier = classifier or load_fit(runs_root, domain, fit.key)
            probs = classifier.predict_uint8(held_out.images, batch_size)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_save_with(path, lambda tmp, p=probs: _save_npy(tmp, p))
            out[held_out.name][fit.key] = probs
    return out


def set_metrics(set_name: str, labels: np.ndarray, probs: np.ndarray, class_names: list[str]) -> dict[str, object]:
    """The results table's columns for one set: test_accuracy, f1_macro, ... as before for ``test``;
    ``dev_accuracy``, ``dev_f1_macro``, ... for ``dev`` (so a column always says which set it is from)."""
    metrics = classification_metrics(labels, probs, class_names)
    if set_name == TEST:
        return metrics
    return {_dev_name(name): value for name, value in metrics.items() if name != "confusion_matrix"}


def _dev_name(name: str) -> str:
    return "dev_" + name[len("test_"):] if name.startswith("test_") else f"dev_{name}"


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a handle, so numpy does not append ".npy" to the temp name
        np.save(handle, array)
