"""Dataset integrity check before anything trains (the idea of nnU-Net's verify_dataset_integrity).

Every candidate file is hashed and fully decoded once. Files that cannot be used go to a
quarantine table with a reason code and a sentence; nothing in the user's folder is touched.
Exact duplicates (same sha256) collapse to one file when their labels agree and are all
quarantined when their labels conflict. Near-duplicates (re-encoded or rescaled copies, found by
perceptual hash, see ``pipeline.near_duplicates``) are kept but share a ``dup_group`` id, which
the split treats like a patient id. The run fails fast (``DataError``) only when what
remains cannot support the protocol.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from pipeline.config import DataConfig, SplitConfig
from pipeline.errors import DataError
from pipeline.imageio import ImageReadError, read_image
from pipeline.near_duplicates import assign_groups, perceptual_hash

MANIFEST_COLUMNS = ["path", "relpath", "label", "patient_id", "sha256", "width", "height", "source_mode",
                    "bytes", "phash", "dup_group"]
QUARANTINE_COLUMNS = ["path", "relpath", "label", "reason", "detail"]


@dataclass
class ValidationResult:
    manifest: pd.DataFrame  # usable files, one row each (MANIFEST_COLUMNS)
    quarantine: pd.DataFrame  # rejected files with their reason (QUARANTINE_COLUMNS)

    def summary(self) -> dict[str, object]:
        return {
            "usable": int(len(self.manifest)),
            "quarantined": int(len(self.quarantine)),
            "per_class": {str(k): int(v) for k, v in self.manifest["label"].value_counts().sort_index().items()},
            "quarantine_reasons": {str(k): int(v) for k, v in
                                   self.quarantine["reason"].value_counts().sort_index().items()},
            "near_duplicate_groups": int(self.manifest["dup_group"].nunique()) if "dup_group" in self.manifest else 0,
            "near_duplicate_images": int(self.manifest["dup_group"].notna().sum()) if "dup_group" in self.manifest else 0,
        }


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def inspect_file(path: str, data: DataConfig) -> dict[str, object]:
    """Hash and decode one file; returns manifest fields, or ``reason``/``detail`` when unusable."""
    try:
        digest = sha256_file(path)
        size = Path(path).stat().st_size
    except OSError as exc:
        return {"reason": "unreadable", "detail": f"cannot read file: {exc.strerror or exc}"}
    try:
        image = read_image(path, data.mode, data.max_pixels)
    except ImageReadError as exc:
        return {"reason": exc.reason, "detail": str(exc), "sha256": digest}
    if min(image.width, image.height) < data.min_side:
        return {"reason": "too-small", "sha256": digest,
                "detail": f"{image.width}x{image.height} is smaller than data.min_side={data.min_side}"}
    return {"sha256": digest, "width": image.width, "height": image.height, "source_mode": image.source_mode,
            "bytes": size, "phash": perceptual_hash(image.pixels)}


def validate(candidates: pd.DataFrame, data: DataConfig, split: SplitConfig,
             workers: int = 4, progress: bool = True) -> ValidationResult:
    """Inspect every candidate, quarantine the unusable, collapse duplicates, check class sizes."""
    paths = candidates["path"].tolist()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(tqdm(pool.map(lambda p: inspect_file(p, data), paths), total=len(paths),
                            desc="validate", unit="img", disable=not progress))
    checked = candidates.reset_index(drop=True).join(pd.DataFrame(results, index=range(len(results))))
    for column in ("reason", "detail", "phash"):
        if column not in checked:
            checked[column] = None
    bad = checked["reason"].notna()
    quarantine = [checked.loc[bad, QUARANTINE_COLUMNS]]
    good = checked.loc[~bad].copy()
    good, duplicates = _collapse_duplicates(good)
    quarantine.append(duplicates)
    good = assign_groups(good, data.near_duplicate_bits)  # perceptual copies: kept, but split as one unit
    manifest = good[MANIFEST_COLUMNS].sort_values(["label", "relpath"]).reset_index(drop=True)
    manifest = manifest.astype({"width": int, "height": int, "bytes": int})
    quarantine_table = pd.concat([q for q in quarantine if len(q)], ignore_index=True) if any(
        len(q) for q in quarantine) else pd.DataFrame(columns=QUARANTINE_COLUMNS)
    result = ValidationResult(manifest=manifest, quarantine=quarantine_table.reset_index(drop=True))
    check_protocol_feasible(result, data, split)
    return result


def _collapse_duplicates(good: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Same bytes, same label: keep the first by relpath. Same bytes, different labels: quarantine all."""
    good = good.sort_values("relpath")
    rejected: list[dict[str, object]] = []
    keep = pd.Series(True, index=good.index)
    for digest, group in good.groupby("sha256", sort=False):
        if len(group) == 1:
            continue
        labels = sorted(group["label"].unique())
        if len(labels) > 1:
            for idx, row in group.iterrows():
                others = ", ".join(r for r in group["relpath"] if r != row["relpath"])
                rejected.append({"path": row["path"], "relpath": row["relpath"], "label": row["label"],
                                 "reason": "duplicate-conflicting-labels",
                                 "detail": f"same content as {others} (labels {', '.join(labels)})"})
                keep[idx] = False
        else:
            first = group.iloc[0]
            for idx, row in group.iloc[1:].iterrows():
                rejected.append({"path": row["path"], "relpath": row["relpath"], "label": row["label"],
                                 "reason": "duplicate", "detail": f"same content as {first['relpath']} (kept)"})
                keep[idx] = False
    return good[keep], pd.DataFrame(rejected, columns=QUARANTINE_COLUMNS)


def check_protocol_feasible(result: ValidationResult, data: DataConfig, split: SplitConfig) -> None:
    """Fail fast, naming the class and the numbers, when the usable images cannot run the protocol."""
    counts = result.manifest["label"].value_counts()
    expected = data.class_names or sorted(set(counts.index) | set(result.quarantine["label"]))
    counts = counts.reindex(expected, fill_value=0)
    if (counts > 0).sum() < 2:
        raise DataError(f"after validation {int((counts > 0).sum())} class(es) have usable images; a classifier "
                        f"needs at least 2. Quarantine reasons: {result.summary()['quarantine_reasons']}")
    need = split.min_images_per_class()
    short = {label: int(n) for label, n in counts.items() if n < need}
    if short:
        listing = ", ".join(f"{label} has {n}" for label, n in short.items())
        raise DataError(f"too few usable images: {listing}; every class needs at least {need} so that the "
                        f"{split.train_fraction:.0%} training sample covers {split.cv_folds}-fold CV and images "
                        f"remain held out (split.train_fraction={split.train_fraction}, "
                        f"split.cv_folds={split.cv_folds})")
