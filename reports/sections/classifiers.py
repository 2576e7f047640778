"""The classifiers section: every arm and architecture, confusion matrices, training curves."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.config import DomainConfig
from pipeline.store import read_json
from reports.format import mean_std, num, pct, plain_text, png_uri
from reports.run_files import chosen_ensembles, class_names_of, fits_dir_of

def classifiers_section(results: pd.DataFrame | None, stages: dict[str, Any],
                        config: DomainConfig | None = None) -> dict[str, Any]:
    if results is None or results.empty:
        return {"available": False}
    folds = results[results["fold"] != "ensemble"]
    ensemble = results[results["fold"] == "ensemble"]
    rows = []
    for (arm, architecture), group in folds.groupby(["arm", "architecture"], sort=True):
        ens = ensemble[(ensemble["arm"] == arm) & (ensemble["architecture"] == architecture)]
        e = ens.iloc[0] if not ens.empty else None
        rows.append({"arm": arm, "architecture": architecture,
                     "acc": mean_std(group["test_accuracy"], percent=True), "f1": mean_std(group["f1_macro"]),
                     "auc": mean_std(group["roc_auc_ovr"]),
                     "ens_acc": pct(e["test_accuracy"]) if e is not None else "",
                     "ens_acc_raw": repr(float(e["test_accuracy"])) if e is not None else "",
                     "ens_f1": f"{e['f1_macro']:.3f}" if e is not None else "",
                     "ens_f1_raw": repr(float(e["f1_macro"])) if e is not None else "",
                     "ens_auc": num(e["roc_auc_ovr"]) if e is not None else "",
                     "weights": "pretrained" if bool(group["pretrained_used"].all()) else "from scratch",
                     "stopped": ", ".join(sorted({str(s) for s in group["stopped_reason"]}))})
    fits_dir = fits_dir_of(stages)
    class_names = class_names_of(results)
    confusions, curves = [], []
    for row in chosen_ensembles(results, config).itertuples():
        matrix = np.array(json.loads(row.confusion_matrix))
        confusions.append(_confusion_figure(matrix, class_names, row.arm, row.architecture))
        histories = []
        for key in str(row.fit_key).split(","):
            path = fits_dir / key / "history.json" if fits_dir else None
            if path is not None and path.is_file():
                histories.append(read_json(path))
        if histories:
            curves.append(_curves_figure(histories, row.arm, row.architecture))
    notes = list((stages.get("classifiers", {}).get("summary") or {}).get("notes", []))
    return {"available": True, "rows": rows, "folds": int(folds["fold"].nunique()), "confusions": confusions,
            "curves": curves, "notes": notes, "minority": minority_recall(results, config)}


def minority_recall(results: pd.DataFrame, config: DomainConfig | None = None, most: int = 3) -> dict[str, Any]:
    """Held-out recall of the (up to ``most``) smallest classes, per arm's chosen fold ensemble: what a balancing
    arm is for. Empty when every class has the same held-out support (nothing is a minority)."""
    support = {c[len("support["):-1]: int(results[c].iloc[0]) for c in results.columns if c.startswith("support[")}
    if len(set(support.values())) < 2:
        return {}
    smallest = sorted((n, name) for name, n in support.items() if n < max(support.values()))[:most]
    classes = [name for _, name in smallest]
    rows = [{"arm": row["arm"], "architecture": row["architecture"],
             "recall": [pct(row.get(f"recall[{name}]")) for name in classes]}  # itertuples would rename "recall[a]"
            for row in chosen_ensembles(results, config).to_dict("records")]
    return {"classes": [f"{name} ({support[name]} held-out images)" for name in classes], "rows": rows}


def _confusion_figure(matrix: np.ndarray, class_names: list[str], arm: str, architecture: str) -> dict[str, str]:
    k = len(matrix)
    fig = Figure(figsize=(1.2 + 0.75 * k, 1.0 + 0.7 * k), dpi=90)
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    names = [plain_text(n) for n in (class_names if len(class_names) == k else map(str, range(k)))]
    ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = matrix.max() if matrix.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=8,
                    color="white" if matrix[i, j] > top / 2 else "black")
    fig.tight_layout()
    return {"src": png_uri(fig), "alt": f"Confusion matrix heat map of {arm} / {architecture} (fold ensemble) on the "
                                        f"held-out real images: rows true class, columns predicted class",
            "caption": f"{arm} / {architecture}: {int(np.trace(matrix))} of {int(matrix.sum())} correct."}


def _curves_figure(histories: list[list[dict[str, Any]]], arm: str, architecture: str) -> dict[str, str]:
    fig = Figure(figsize=(5.0, 2.6), dpi=90)
    ax = fig.subplots()
    for fold, history in enumerate(histories):
        epochs = [h["epoch"] for h in history]
        line = ax.plot(epochs, [h["train_loss"] for h in history], lw=1, label=f"fold {fold} train")[0]
        ax.plot(epochs, [h["val_loss"] for h in history], lw=1, ls="--", color=line.get_color(),
                label=f"fold {fold} validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return {"src": png_uri(fig), "alt": f"Training (solid) and validation (dashed) loss per epoch for each fold of "
                                        f"{arm} / {architecture}",
            "caption": f"{arm} / {architecture}: training (solid) and validation (dashed) loss per fold."}
