"""Each arm's chosen classifier as a timm model folder: ``model.safetensors`` + ``config.json``.

    export_arms(results, out_dir) -> {arm: folder}      out_dir/<arm>/{model.safetensors, config.json}

Which model: per arm, the (architecture, fold) fit that is best by ``classifiers.select_on``, the
same criterion that chose each fit's step: the lowest validation loss, or the highest validation
accuracy with the lower loss breaking ties (at the fit's best step, on its validation fold: the
real sample's fold k under ``validation: real``).
Held-out numbers are never used to choose: they stay an unbiased estimate of the exported model. (The fold ensemble is what the results table
scores; a single fold model is what a user can load with timm.)

The folder is timm's own ``save_for_hf`` format, so either of these loads it::

    model = timm.create_model("local-dir:<folder>", pretrained=True)
    model = timm.create_model(arch, pretrained=True, num_classes=N, in_chans=C,
                              pretrained_cfg_overlay=dict(file="<folder>/model.safetensors", num_classes=N))

``config.json`` carries the architecture, ``label_names`` (the class names, in output order) and
a ``pretrained_cfg`` with ``input_size`` (C, S, S), ``num_classes`` and the ``mean``/``std`` the
model was trained with, so ``timm.data.resolve_data_config(model=model)`` gives its
preprocessing; ``synth_augment`` says where the model came from. AlexNet and GoogLeNet need
``import classifiers`` first (it registers them into timm).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from timm.models import save_for_hf

from classifiers import zoo
from classifiers.data import arm_file_name
from classifiers.early_stopping import Monitor, selection_key
from classifiers.train import FitResult
from pipeline.store import atomic_folder

SELECTION = {"val_loss": "lowest validation loss among the arm's (architecture, fold) fits",
             "val_accuracy": "highest validation accuracy (then lowest loss) among the arm's (architecture, fold) fits"}


def select_per_arm(results: list[FitResult], select_on: Monitor = "val_loss") -> dict[str, FitResult]:
    """arm -> its best fit by ``select_on`` (NaN counts as worst; full ties keep the first)."""
    best: dict[str, FitResult] = {}
    for result in results:
        arm = result.metrics["arm"]
        if arm not in best or _rank(result, select_on) < _rank(best[arm], select_on):
            best[arm] = result
    return best


def _rank(result: FitResult, select_on: Monitor) -> tuple[float, float]:
    """Lower is better (``selection_key``); a missing or non-finite metric ranks last."""
    loss, accuracy = _finite(result.metrics.get("val_loss"), math.inf), _finite(result.metrics.get("val_accuracy"), 0.0)
    return selection_key(loss, accuracy, select_on)


def _finite(value: Any, worst: float) -> float:
    return worst if value is None or not math.isfinite(float(value)) else float(value)


def export_fit(result: FitResult, folder: Path, select_on: Monitor = "val_loss") -> Path:
    """Write one fit's best-epoch weights and timm config into ``folder`` (replaced atomically)."""
    saved = torch.load(result.directory / "model.pt", map_location="cpu", weights_only=True)
    channels, size = int(saved["in_chans"]), int(saved["image_size"])
    model = zoo.create(saved["architecture"], in_chans=channels, num_classes=len(saved["class_names"]))
    model.load_state_dict(saved["state_dict"])
    m = result.metrics
    provenance = {"arm": m["arm"], "architecture": m["architecture"], "fold": m["fold"], "fit_key": result.key,
                  "val_loss": m["val_loss"], "val_accuracy": m["val_accuracy"], "best_step": m["best_step"],
                  "pretrained_source": m["pretrained_source"], "selected_by": f"{SELECTION[select_on]}; held-out results not used"}
    with atomic_folder(folder) as tmp:  # written aside, swapped in (pipeline.store): never a missing folder
        save_for_hf(model, str(tmp), safe_serialization=True,
                    model_config={"label_names": list(saved["class_names"]), "synth_augment": provenance},
                    data_config={"input_size": (channels, size, size), "mean": tuple(saved["mean"]),
                                 "std": tuple(saved["std"]), "crop_pct": 1.0})
    return folder


def export_arms(results: list[FitResult], out_dir: Path, select_on: Monitor = "val_loss") -> dict[str, Any]:
    """Export every arm's selected fit under ``out_dir/<arm>``; returns {arm: {path, architecture, fold, ...}}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    exported = {}
    for arm, result in sorted(select_per_arm(results, select_on).items()):
        folder = export_fit(result, out_dir / arm_file_name(arm), select_on)
        exported[arm] = {"path": str(folder), "architecture": result.metrics["architecture"],
                         "fold": result.metrics["fold"], "val_loss": result.metrics["val_loss"],
                         "val_accuracy": result.metrics["val_accuracy"], "selected_by": select_on,
                         "fit_key": result.key}
    return exported
