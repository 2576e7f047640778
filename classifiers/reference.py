"""The reference classifier is the real arm: one training loop for every CNN the pipeline trains.

Selection (pipeline.generator.selection) and the quality stage judge synthetic images with k fold
models trained on the real 20% sample only. Those models are the classifiers stage's ``real`` arm
for the reference architecture (``classifiers.primary_architecture``, else the panel's first), trained
by the same ``run_fit`` under the same fit keys, just earlier: the ``reference`` stage runs after the generator
and before synthesis (flows/run.py), and the classifiers stage later finds these fits complete and reuses them.

    out = reference_stage(config, split_path)   # trains (or reuses) the k real-arm fits
    judge = out.load()                          # pipeline.quality.judge.FoldModels
    out.key                                     # hashes the k fit keys: changes exactly when a fit would

A fit never reads a held-out image (classifiers.train): nothing on the selection path does either.
``ReferenceOutput`` is the ``pipeline.quality.judge.ReferenceSource`` the wiring (flows/run.py) hands
to the floors below, which never import this module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from classifiers.data import arm_manifest, real_sample_manifest
from classifiers.predict import load_fit
from classifiers.stage import fit_specs
from classifiers.train import FIT_STAGE, FitSpec, run_fit
from pipeline.config import DomainConfig, hash_payload
from pipeline.quality.judge import FoldModels
from pipeline.split import Split
from pipeline.stages import load_split
from pipeline.store import RunStore, atomic_write_json, atomic_write_table, read_json

REFERENCE_STAGE = "reference"
REFERENCE_ARM = "real"
KEY_VERSION = 2  # 2: the real arm's fits (1 was a separate loop in pipeline/quality/reference.py)


@dataclass
class ReferenceOutput:
    """The reference stage's result: small and picklable (a Prefect task returns it); ``load()`` reads the fits."""

    key: str
    directory: Path
    runs_root: str
    domain: str
    fit_keys: list[str]
    summary: dict[str, Any]
    cached: bool = False
    _loaded: FoldModels | None = field(default=None, repr=False, compare=False)

    def load(self) -> FoldModels:
        """The k fold models on the CPU (loaded once), with the folds they validated on."""
        if self._loaded is None:
            self._loaded = load_fold_models(self.runs_root, self.domain, self.fit_keys,
                                            self.summary.get("cv_accuracy"))
        return self._loaded

    def describe(self) -> str:
        s = self.summary
        return (f"reference classifier (domain features, label consistency): the real arm's {s['architecture']} "
                f"fold models, trained on the real sample only, cross-validated accuracy on real images "
                f"{s['cv_accuracy']:.3f}")

    def __getstate__(self) -> dict[str, Any]:  # Prefect persists the output: never the loaded models
        return {**self.__dict__, "_loaded": None}


def reference_architecture(config: DomainConfig) -> str:
    cc = config.classifiers
    return cc.primary_architecture or cc.architectures[0]


def reference_specs(config: DomainConfig, split: Split, directory: Path) -> tuple[list[FitSpec], dict[Path, Any]]:
    """The real arm's fit specs for the reference architecture, pointing at manifests to be written under
    ``directory`` (the tables to write, by path)."""
    class_names = config.data.resolve_class_names(split.table["label"])
    real, table = real_sample_manifest(split), arm_manifest(REFERENCE_ARM, split, None)
    arm_path, real_path = directory / "arms" / f"{REFERENCE_ARM}.parquet", directory / "real_sample.parquet"
    specs = [replace(spec, arm_manifest_path=str(arm_path), real_manifest_path=str(real_path))
             for spec in fit_specs(config, class_names, real, {REFERENCE_ARM: table}, [reference_architecture(config)])]
    return specs, {arm_path: table, real_path: real}


def reference_key(config: DomainConfig, split: Split) -> str:
    """The stage key, computed without training: the fit keys (content, settings, folds) it is made of."""
    specs, _ = reference_specs(config, split, Path("."))
    return hash_payload({"fits": [spec.key for spec in specs], "version": KEY_VERSION})


def reference_stage(config: DomainConfig, split_path: str | os.PathLike[str], progress: bool = False) -> ReferenceOutput:
    """Train (or reuse) the real arm's k fits of the reference architecture; the held-out side is never read."""
    split = load_split(split_path)
    key = reference_key(config, split)
    store = RunStore(config.runs_root, config.name)
    directory = store.stage_dir(REFERENCE_STAGE, key)
    with store.lock(REFERENCE_STAGE, key):
        specs, tables = reference_specs(config, split, directory)
        output = ReferenceOutput(key, directory, str(config.runs_root), config.name, [s.key for s in specs], {})
        if store.is_complete(REFERENCE_STAGE, key):
            output.summary, output.cached = store.read_summary(REFERENCE_STAGE, key), True
            return output
        for path, table in tables.items():
            atomic_write_table(path, table, csv_copy=False)
        results = []
        for spec in specs:
            with store.lock(FIT_STAGE, spec.key):  # a flow's fit task on the same key waits, then reuses it
                results.append(run_fit(spec, progress=progress))
        folds = [{k: r.metrics.get(k) for k in ("fold", "best_step", "val_loss", "val_accuracy", "n_train", "n_val",
                                                "stopped_reason")} | {"fit_key": r.key, "reused": r.cached}
                 for r in results]
        output.summary = {"architecture": reference_architecture(config), "arm": REFERENCE_ARM, "folds": folds,
                          "cv_accuracy": float(np.mean([f["val_accuracy"] for f in folds])),
                          "train_images": int(len(split.train))}
        atomic_write_json(directory / "summary.json", output.summary)
        store.mark_complete(REFERENCE_STAGE, key, output.summary)
        return output


def load_fold_models(runs_root: str, domain: str, fit_keys: list[str], cv_accuracy: float | None) -> FoldModels:
    """The stored fits as one FoldModels: the same weights and normalisation the classifiers stage scores."""
    fits = [load_fit(runs_root, domain, key, device=torch.device("cpu")) for key in fit_keys]
    fit_dir = RunStore(runs_root, domain).domain_dir / FIT_STAGE
    validated = [list(read_json(fit_dir / key / "record.json")["validation"]["sha256"]) for key in fit_keys]
    first = fits[0]
    return FoldModels([fit.model for fit in fits], first.class_names, first.image_size,
                      first.batches.mean.flatten().tolist(), first.batches.std.flatten().tolist(), validated,
                      cv_accuracy)
