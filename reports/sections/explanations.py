"""The LIME section: the real-vs-synthetic evidence table, each explained image, overlays."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from reports.format import num, pct, plain_text, png_uri

def explanations_section(stages: dict[str, Any], share: bool = False) -> dict[str, Any]:
    """LIME per arm: the evidence table, each explained image's row and overlays (synthetic only when sharing)."""
    from reports.lime_explain import load_explanations

    info = stages.get("explain")
    if not info:
        return {"available": False, "reason": "this run has no explanation stage"}
    if not info.get("directory"):
        return {"available": False, "reason": str((info.get("summary") or {}).get("not_run", ""))}
    directory = Path(info["directory"])
    if not (directory / "explanations.json").is_file():
        return {"available": False, "reason": f"explanation files missing from {directory}"}
    records, arrays, comparison, summary = load_explanations(directory)
    settings = summary.get("settings", {})
    class_names = summary.get("class_names", [])
    comp_rows = [{"arm": r["arm"], "class": r["class"], "n_real": int(r["n_real"]), "n_synthetic": int(r["n_synthetic"]),
                  "correlation": num(r["correlation"]), "correlation_raw": repr(float(r["correlation"])),
                  "interval": evidence_interval(r),
                  "iou": num(r["iou_top"]), "iou_raw": repr(float(r["iou_top"]))}
                 for r in comparison.to_dict(orient="records")]
    arms = []
    for arm in summary.get("arms", []):
        model = summary.get("models", {}).get(arm, {})
        mine = [r for r in records if r["arm"] == arm]
        mine.sort(key=lambda r: (class_names.index(r["true_label"]) if r["true_label"] in class_names else 0,
                                 r["source"], r["index"]))
        rows, figures = [], []
        for number, r in enumerate(mine, start=1):
            r["number"] = number
            rows.append({"number": number, "source": r["source"], "kind": r["kind"], "true": r["true_label"],
                         "predicted": r["predicted_label"], "confidence": pct(r["confidence"]),
                         "top": ", ".join(f"{w:+.2g}" for w in r["top_weights"]),
                         "share": pct(r["positive_share"]), "score": num(r["score"])})
        for name in class_names:
            group = [r for r in mine if r["true_label"] == name and not (share and r["source"] != "synthetic")]
            if group:
                figures.append(_overlay_figure(group, arrays, arm, name))
        mean_maps = _mean_maps_figure(comparison, arrays, arm)
        arms.append({"arm": arm, "model": f"{model.get('architecture', '?')} fold {model.get('fold', '?')}, chosen on "
                                          f"validation (validation accuracy {num(model.get('val_accuracy'))}); "
                                          f"held-out macro-F1 {num(model.get('f1_macro'))}",
                     "rows": rows, "figures": figures, "mean_maps": mean_maps})
    return {"available": True, "comparison": comp_rows, "arms": arms, "top_k": settings.get("top_k", ""),
            "top_percent": round(100 * float(settings.get("top_fraction", 0.2))),
            "settings": f"{settings.get('num_samples', '?')} perturbed samples, {settings.get('segmentation', '?')} "
                        f"superpixels (~{settings.get('n_segments', '?')}), seed {summary.get('seed', '?')}",
            "reason": ""}


def evidence_interval(row: dict[str, Any]) -> str:
    """The correlation's 95% bootstrap interval, or why there is none (too few images to say anything)."""
    low, high = row.get("correlation_low"), row.get("correlation_high")
    if low is None or high is None or (isinstance(low, float) and math.isnan(low)):
        return (f"sample too small ({int(row['n_real'])} real, {int(row['n_synthetic'])} synthetic images; "
                f"an interval needs at least 5 of each)")
    return f"{num(low)} to {num(high)}"


def _overlay_figure(group: list[dict[str, Any]], arrays: dict[str, np.ndarray], arm: str, label: str) -> dict[str, str]:
    fig = Figure(figsize=(5.4, 1.75 * len(group)), dpi=80)
    axes = fig.subplots(len(group), 3, squeeze=False)
    for row, record in enumerate(group):
        i = record["index"]
        image, segments, weights = arrays["images"][i], arrays["segments"][i], arrays["maps_pred"][i]
        gray = image[..., 0] if np.all(image[..., 0] == image[..., 1]) else None
        shown = gray if gray is not None else image
        scale = float(np.abs(weights).max()) or 1.0
        mask = np.isin(segments, record["top_segments"])
        for col in range(3):
            ax = axes[row][col]
            ax.set_axis_off()
            ax.imshow(shown, cmap="gray" if gray is not None else None, vmin=0, vmax=255, interpolation="nearest")
        axes[row][1].imshow(weights, cmap="bwr", vmin=-scale, vmax=scale, alpha=0.55, interpolation="nearest")
        axes[row][2].contour(mask.astype(float), levels=[0.5], colors=["#ffd400"], linewidths=1.5)
        axes[row][0].set_title(f"#{record['number']}", fontsize=8, loc="left")
    axes[0][0].set_title(f"#{group[0]['number']} image", fontsize=8, loc="left")
    axes[0][1].set_title("LIME weights", fontsize=8)
    axes[0][2].set_title("top superpixels", fontsize=8)
    fig.subplots_adjust(wspace=0.04, hspace=0.18)
    numbers = ", ".join(f"#{r['number']} ({r['source']})" for r in group)
    return {"src": png_uri(fig),
            "alt": f"LIME explanations for true class {label} under arm {arm}, images {numbers}: each row shows the "
                   f"image, its superpixel weights for the predicted class as a red/blue heat map, and the outline "
                   f"of the top superpixels",
            "caption": f"{arm}, true class {label}: images {numbers} (see the table above for labels and confidence)."}


def _mean_maps_figure(comparison: pd.DataFrame, arrays: dict[str, np.ndarray], arm: str) -> dict[str, str] | None:
    rows = [(i, r) for i, r in enumerate(comparison.to_dict(orient="records")) if r["arm"] == arm]
    if not rows or "mean_real" not in arrays:
        return None
    fig = Figure(figsize=(4.4, 2.1 * len(rows)), dpi=80)
    axes = fig.subplots(len(rows), 2, squeeze=False)
    for r, (i, record) in enumerate(rows):
        for c, key in enumerate(("mean_real", "mean_synthetic")):
            ax = axes[r][c]
            ax.set_axis_off()
            data = arrays[key][i]
            if np.isfinite(data).any():
                ax.imshow(np.nan_to_num(data), cmap="bwr", vmin=-1, vmax=1, interpolation="nearest")
            ax.set_title(f"{plain_text(record['class'])[:20]}: {'real' if c == 0 else 'synthetic'}", fontsize=7)
    fig.subplots_adjust(wspace=0.05, hspace=0.3)
    return {"src": png_uri(fig), "alt": f"Mean true-class LIME importance maps of arm {arm}, real images (left) and "
                                        f"synthetic images (right), one row per class",
            "caption": f"{arm}: mean importance map per class, real (left) vs synthetic (right); red supports the true "
                       f"class."}
