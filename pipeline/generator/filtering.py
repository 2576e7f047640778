"""Filtering a synthetic set with the real-trained reference: drop images it assigns to another class.

He et al. (arXiv 2210.07574) filter synthetic training data with a classifier trained on real data, and
arXiv 2311.13090 shows that keeping only the easy (confident) samples hurts. So the one rule is: the
reference's most likely class must be the intended one. Uncertain-but-correct images stay. Real-seeded
images are judged out of fold (by the fold model that never trained on their seed image), so a copy of its
seed is judged at the reference's cross-validated accuracy, not its training accuracy.

Dropped images are replaced by further images of the same class (the next indices, seeded like every
other image), until the class has its count or ``filter_max_factor`` times its count were generated. What
was generated, dropped and kept per class goes into the stage's summary, each dropped image with the class
the reference gave it into ``filtered.parquet``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from pipeline.imageio import read_image
from pipeline.quality.judge import FoldModels

FILTERED_FILE = "filtered.parquet"


@dataclass
class FilterResult:
    manifest: pd.DataFrame  # the kept images: at most counts[c] of class c, lowest indices first
    dropped: pd.DataFrame  # relpath, label, predicted, p_intended of every dropped image
    per_class: dict[str, dict[str, int]]  # generated / dropped / kept per class name


def judge(reference: FoldModels, manifest: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class index, probability of the intended class) for every row of a synthesis manifest."""
    mode = str(manifest["mode"].iloc[0])
    images = torch.stack([_chw(read_image(path, mode).pixels) for path in manifest["path"]])
    seeds = manifest["seed_sha256"].tolist() if "seed_sha256" in manifest else [None] * len(manifest)
    seeded = any(s is not None and s == s for s in seeds)  # NaN-safe: a noise-mode manifest has none
    probs = reference.out_of_fold_proba(images, seeds) if seeded else reference.predict_proba(images)
    intended = manifest["class_index"].to_numpy(dtype=int)
    return probs.argmax(1), probs[np.arange(len(probs)), intended]


def filter_by_reference(generate: Callable[[list[int]], pd.DataFrame], reference: FoldModels, counts: list[int],
                        max_factor: float) -> FilterResult:
    """Generate (``generate(totals)`` returns the manifest of images 0..totals[c]-1 of every class c), judge,
    and ask for more of each class short of its count, at most ``max_factor`` times the count per class."""
    caps = [max(count, math.ceil(max_factor * count)) for count in counts]
    totals, verdicts = list(counts), {}
    while True:
        manifest = generate(totals)
        fresh = manifest[~manifest["relpath"].isin(verdicts)]
        if len(fresh):
            predicted, p_intended = judge(reference, fresh)
            verdicts.update({rel: (int(p), float(q)) for rel, p, q in zip(fresh["relpath"], predicted, p_intended)})
        correct = np.array([verdicts[rel][0] == c for rel, c in zip(manifest["relpath"], manifest["class_index"])])
        kept = manifest[correct].groupby("class_index").size().reindex(range(len(counts)), fill_value=0)
        grow = {}
        for c, count in enumerate(counts):
            if kept[c] < count and totals[c] < caps[c]:
                rate = max(int(kept[c]), 1) / totals[c]  # the class's acceptance so far
                grow[c] = min(caps[c], totals[c] + math.ceil((count - kept[c]) / rate))
        if not grow:
            break
        totals = [grow.get(c, total) for c, total in enumerate(totals)]
    return _result(manifest, correct, verdicts, counts, reference.class_names)


def _result(manifest: pd.DataFrame, correct: np.ndarray, verdicts: dict[str, tuple[int, float]], counts: list[int],
            class_names: list[str]) -> FilterResult:
    ranked = manifest[correct].sort_values(["class_index", "index"], kind="stable")
    kept = ranked[ranked.groupby("class_index").cumcount() < ranked["class_index"].map(dict(enumerate(counts)))]
    dropped = manifest[~correct]
    dropped_table = pd.DataFrame({
        "relpath": dropped["relpath"].astype(str), "label": dropped["label"].astype(str),
        "predicted": [class_names[verdicts[rel][0]] for rel in dropped["relpath"]],
        "p_intended": [round(verdicts[rel][1], 5) for rel in dropped["relpath"]]})
    per_class = {}
    for c, name in enumerate(class_names):
        of_class = manifest["class_index"] == c
        per_class[str(name)] = {"generated": int(of_class.sum()), "dropped": int((of_class & ~correct).sum()),
                                "kept": int((kept["class_index"] == c).sum()), "wanted": int(counts[c])}
    return FilterResult(kept.reset_index(drop=True), dropped_table.reset_index(drop=True), per_class)


def _chw(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1), copy=True))
