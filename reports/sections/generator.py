"""The generator section: facts, the loss curve, real-vs-synthetic grids (synthetic only when sharing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.config import DomainConfig
from pipeline.store import read_json
from reports.format import num, png_uri

GRID_PER_CLASS = 6


def generator_section(stages: dict[str, Any], config: DomainConfig | None, share: bool = False) -> dict[str, Any]:
    gen = stages.get("generator")
    if not gen:
        return {"available": False}
    summary = gen.get("summary", {}) or {}
    synth = (stages.get("synthesis") or {}).get("summary", {}) or {}
    facts = [("generator hash", str(generator_hash(gen))[:16]),
             ("training steps", summary.get("steps", "")), ("parameters", f"{summary.get('parameters', 0):,}"),
             ("image size", f"{summary.get('image_size', '')} px, {summary.get('mode', '')}"),
             ("training images", summary.get("train_images", "")),
             ("final loss", num(summary.get("final_loss"))),
             ("mean loss of the last 50 steps", num(summary.get("mean_loss_last_50"))),
             ("training time", f"{summary.get('train_seconds', '')} s ({summary.get('images_per_second', '')} img/s)")]
    if summary.get("resumed_from"):
        facts.append(("resumed from step", summary["resumed_from"]))
    if synth:
        facts += [("sampler", f"{synth.get('sampler', '')}, {synth.get('steps', '')} steps, guidance "
                              f"{synth.get('guidance_scale', '')}"),
                  ("synthetic images", f"{synth.get('images', '')} ({synth.get('per_class', '')} per class)")]
    loss_plot, loss_note = None, ""
    where = gen.get("pipeline") or gen.get("checkpoint")  # pipeline folder (now) or generator.pt (older runs)
    losses_path = Path(where).parent / "losses.json" if where else None
    if losses_path is not None and losses_path.is_file():
        losses = np.array(read_json(losses_path), dtype=np.float64).reshape(-1, 2)
        fig = Figure(figsize=(5.2, 2.6), dpi=90)
        ax = fig.subplots()
        ax.plot(losses[:, 0], losses[:, 1], lw=0.6, alpha=0.4, label="per step")
        window = max(1, len(losses) // 25)
        if len(losses) >= window > 1:
            smooth = np.convolve(losses[:, 1], np.ones(window) / window, mode="valid")
            ax.plot(losses[window - 1:, 0], smooth, lw=1.5, label=f"mean of {window}")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        loss_plot = png_uri(fig)
    else:
        loss_note = "Loss curve not recorded for this generator (trained before the loss log existed)."
    return {"available": True, "facts": facts, "loss_plot": loss_plot, "loss_note": loss_note,
            "grids": _real_vs_synthetic_grids(stages, int(summary.get("image_size") or 64), summary.get("mode", "L"),
                                              include_real=not share)}


def _real_vs_synthetic_grids(stages: dict[str, Any], size: int, mode: str,
                             include_real: bool = True) -> list[dict[str, str]]:
    """Per class, real training images over synthetic ones on one gray scale (synthetic only when sharing).
    Each image is checked against the sha256 recorded for it: one changed since ingest is left out, and said."""
    split_path = stages.get("split", {}).get("split")
    manifest = stages.get("synthesis", {}).get("manifest")
    if not split_path or not manifest or not Path(split_path).with_suffix(".parquet").is_file() \
            or not Path(manifest).with_suffix(".parquet").is_file():
        return []
    real = pd.read_parquet(Path(split_path).with_suffix(".parquet"))
    real = real[real["split"] == "train"]
    synthetic = pd.read_parquet(Path(manifest).with_suffix(".parquet"))
    out = []
    for label in list(dict.fromkeys(synthetic["label"].astype(str))):
        rows = {"synthetic": synthetic[synthetic["label"].astype(str) == label].head(GRID_PER_CLASS)}
        if include_real:
            rows = {"real": real[real["label"].astype(str) == label].head(GRID_PER_CLASS), **rows}
        fig = Figure(figsize=(1.1 * GRID_PER_CLASS, 1.2 * len(rows)), dpi=90)
        axes = fig.subplots(len(rows), GRID_PER_CLASS, squeeze=False)
        left_out = 0
        for r, (name, table) in enumerate(rows.items()):
            for c in range(GRID_PER_CLASS):
                axes[r][c].set_axis_off()
                pixels = _verified_pixels(table, c, mode, size) if c < len(table) else None
                left_out += c < len(table) and pixels is None
                if pixels is not None:
                    axes[r][c].imshow(pixels, cmap="gray" if pixels.ndim == 2 else None, vmin=0, vmax=255,
                                      interpolation="nearest")
            axes[r][0].set_title(name, fontsize=8, loc="left")
        fig.subplots_adjust(wspace=0.05, hspace=0.25)
        missing = f" {left_out} image(s) changed or missing since they were recorded: not shown." if left_out else ""
        if include_real:
            out.append({"src": png_uri(fig), "alt": f"Class {label}: real images (top row) and synthetic images "
                                                    f"(bottom row) at {size} px on the same gray scale",
                        "caption": f"{label}: real (top) vs synthetic (bottom), same gray scale (0-255).{missing}"})
        else:
            out.append({"src": png_uri(fig), "alt": f"Class {label}: synthetic images only at {size} px (real "
                                                    f"images withheld in this shareable copy)",
                        "caption": f"{label}: synthetic images (real images withheld), gray scale 0-255.{missing}"})
    return out


def _verified_pixels(table: pd.DataFrame, row: int, mode: str, size: int) -> np.ndarray | None:
    """The row's image at the models' resolution, or None when it no longer holds the recorded content."""
    from pipeline.errors import IntegrityError
    from pipeline.image_tensors import square_resize
    from pipeline.imageio import ImageReadError, read_image
    from pipeline.integrity import verify_files

    path, sha = str(table["path"].iloc[row]), str(table["sha256"].iloc[row])
    try:
        verify_files([path], [sha])
        return square_resize(read_image(path, mode).pixels, size)
    except (IntegrityError, ImageReadError, OSError):
        return None


def generator_hash(gen: dict[str, Any]) -> str:
    summary = gen.get("summary") or {}
    return str(gen.get("pipeline_hash") or summary.get("pipeline_hash") or gen.get("checkpoint_hash")
               or summary.get("checkpoint_hash") or "")
