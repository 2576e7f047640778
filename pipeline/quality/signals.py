"""Cheap per-class intensity/colour statistics: do synthetic images look as bright as the real ones?

Computed on uint8 image batches (N, C, H, W) and reported in [0, 1] units (pixel / 255):

    mean        mean pixel value of an image, averaged over the class (per channel for RGB: mean_0..2)
    std         pixel standard deviation within an image (contrast), averaged over the class
    background  mean of the image's border ring (width size // 16, at least 1 px): the background
                level of centred anatomy / cells (black MRI and CT surroundings, white smear background)

``intensity_gap`` compares a synthetic set with the real training sample: per class the absolute
differences of mean, std and background (and each channel mean for RGB), and ``gap``, the mean of
those differences over classes. It would have flagged every run before issue 8 (grey backgrounds on
black-background MRI). Inputs are tensors the caller loaded: this module reads no files, so what it
sees is exactly what the caller chose (the real 20% sample and synthetic images, never held-out ones).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

STATISTICS: tuple[str, ...] = ("mean", "std", "background")


def border_width(size: int) -> int:
    return max(1, size // 16)


def image_statistics(images: torch.Tensor) -> pd.DataFrame:
    """One row per image: mean, std, background (and mean_<c> per channel when C > 1), in [0, 1]."""
    if images.ndim != 4:
        raise ValueError(f"expected a batch (N, C, H, W), got shape {tuple(images.shape)}")
    x = images.double() / 255.0 if images.dtype == torch.uint8 else images.double()
    n, channels, height, width = x.shape
    b = border_width(min(height, width))
    ring = torch.ones(height, width, dtype=torch.bool)
    ring[b:height - b, b:width - b] = False
    out = {"mean": x.mean(dim=(1, 2, 3)).numpy(), "std": x.flatten(1).std(dim=1).numpy(),
           "background": x[:, :, ring].mean(dim=(1, 2)).numpy()}
    if channels > 1:
        for c in range(channels):
            out[f"mean_{c}"] = x[:, c].mean(dim=(1, 2)).numpy()
    return pd.DataFrame(out)


def class_statistics(images: torch.Tensor, labels: torch.Tensor | Sequence[int],
                     class_names: Sequence[str]) -> pd.DataFrame:
    """Per class (rows indexed by class name): n and the mean over its images of every image statistic."""
    per_image = image_statistics(images)
    per_image["label"] = np.asarray(labels)
    rows = {}
    for index, name in enumerate(class_names):
        part = per_image[per_image["label"] == index].drop(columns="label")
        rows[name] = {"n": int(len(part)), **{k: float(part[k].mean()) if len(part) else float("nan")
                                               for k in part.columns}}
    return pd.DataFrame.from_dict(rows, orient="index")


def intensity_gap(synthetic: pd.DataFrame, real: pd.DataFrame) -> dict[str, object]:
    """Per-class absolute differences of the statistics (synthetic - real) and their overall mean ``gap``."""
    columns = [c for c in real.columns if c != "n" and c in synthetic.columns]
    per_class = {}
    for name in real.index:
        if name not in synthetic.index or synthetic.loc[name, "n"] == 0:
            continue
        diffs = {c: float(synthetic.loc[name, c] - real.loc[name, c]) for c in columns}
        per_class[str(name)] = {**diffs, "gap": float(np.mean([abs(v) for v in diffs.values()]))}
    gap = float(np.mean([v["gap"] for v in per_class.values()])) if per_class else float("nan")
    return {"gap": gap, "per_class": per_class}
