"""The training data of each arm, as cached tensors, and the batches (with MONAI augmentation for ``real+aug``).

Arms (the same protocol and the same step budget for each; only the training data differs):

    synthetic        the generator's balanced synthetic set only (the study's arm)
    real             the 20% real sample only
    real+aug         the 20% real sample with MONAI's medical augmentations (pipeline/augment.py)
    real+synthetic   the 20% real sample and the synthetic set together, mixed
    synthetic->real  pretrain on the synthetic set, then fine-tune on the real sample (one budget, split)
    real+aug+synthetic  the real sample and the synthetic set, mixed, with MONAI's augmentations on every batch
    balance          the real sample plus, for each class below the largest, its first synthetic images up to
                     the largest class's count (the synthetic set's order: image 0, 1, ...)

Images are decoded and resized once per run (pipeline.image_tensors caches them by content hash)
and kept as uint8; a batch is converted to float, augmented and normalised on the fly, which
costs little next to a CNN step.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from pipeline.folds import canonical_order
from pipeline.augment import BatchAugment
from pipeline.config import ClassifierConfig
from pipeline.errors import DataError
from pipeline.image_tensors import load_image_tensors
from pipeline.split import Split

NEEDS_SYNTHETIC: frozenset[str] = frozenset({"synthetic", "real+synthetic", "synthetic->real", "real+aug+synthetic",
                                            "balance"})
NEEDS_REAL: frozenset[str] = frozenset({"real", "real+aug", "real+synthetic", "synthetic->real", "real+aug+synthetic",
                                       "balance"})
AUGMENTED: frozenset[str] = frozenset({"real+aug", "real+aug+synthetic"})
BALANCING: frozenset[str] = frozenset({"balance"})
PRETRAIN_FINETUNE: frozenset[str] = frozenset({"synthetic->real"})
MANIFEST_COLUMNS: tuple[str, ...] = ("path", "sha256", "label", "patient_id", "source")


def read_synthetic_manifest(path: str | Path, class_names: list[str]) -> pd.DataFrame:
    """The generator's manifest (parquet or CSV with at least path, label, sha256), checked against the classes."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"synthetic manifest {str(path)!r} does not exist")
    table = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    missing = {"path", "label", "sha256"} - set(table.columns)
    if missing:
        raise DataError(f"synthetic manifest {path}: missing column(s) {', '.join(sorted(missing))}; "
                        f"expected at least path, label, sha256")
    unknown = sorted(set(table["label"].astype(str)) - set(class_names))
    if unknown:
        raise DataError(f"synthetic manifest {path}: label(s) {', '.join(unknown)} are not among the domain's "
                        f"classes ({', '.join(class_names)})")
    if table.empty:
        raise DataError(f"synthetic manifest {path} lists no images")
    return table


def _rows(table: pd.DataFrame, source: str) -> pd.DataFrame:
    out = pd.DataFrame({"path": table["path"].astype(str), "sha256": table["sha256"].astype(str),
                        "label": table["label"].astype(str)})
    out["patient_id"] = table["patient_id"].astype("object") if "patient_id" in table else None
    out["dup_group"] = table["dup_group"].astype("object") if "dup_group" in table else None
    out["source"] = source
    # real-seeded synthesis names the real image each synthetic one started from: validation must exclude both
    out["seed_sha256"] = table["seed_sha256"].astype("object") if "seed_sha256" in table else None
    return out


def arm_manifest(arm: str, split: Split, synthetic: pd.DataFrame | None) -> pd.DataFrame:
    """Rows (path, sha256, label, patient_id, source) the arm trains and validates on, in canonical order."""
    parts = []
    if arm in NEEDS_REAL:
        parts.append(_rows(split.train, "real"))
    if arm in NEEDS_SYNTHETIC:
        if synthetic is None:
            raise DataError(f"arm {arm!r} needs a synthetic manifest")
        parts.append(_rows(balancing_rows(synthetic, split.train) if arm in BALANCING else synthetic, "synthetic"))
    if not parts:
        raise DataError(f"unknown arm {arm!r}")
    table = pd.concat(parts, ignore_index=True).drop_duplicates("sha256", keep="first")
    return canonical_order(table)


def balancing_rows(synthetic: pd.DataFrame, real: pd.DataFrame) -> pd.DataFrame:
    """For each class below the real sample's largest, its first synthetic rows (by the manifest's image
    ``index`` where it has one, else in the set's order) up to the largest class's count; none for the
    largest. A set with fewer images than a deficit gives all it has."""
    counts = real["label"].astype(str).value_counts()
    order = synthetic.sort_values("index", kind="stable") if "index" in synthetic else synthetic
    labels = order["label"].astype(str)
    order = order.assign(_rank=order.groupby(labels).cumcount())
    deficit = (counts.max() - labels.map(counts).fillna(0)).astype(int)
    return order[order["_rank"] < deficit].drop(columns="_rank")


def real_sample_manifest(split: Split) -> pd.DataFrame:
    """The real 20% sample (the split's training side), in canonical order: its folds validate every arm."""
    return canonical_order(_rows(split.train, "real"))


def arm_file_name(arm: str) -> str:
    """A file name for an arm (``synthetic->real`` -> ``synthetic-to-real``)."""
    return arm.replace("->", "-to-")


def held_out_manifest(split: Split) -> pd.DataFrame:
    """The held-out real test set (the 80%, less any development share), in canonical order."""
    return canonical_order(_rows(split.test, "real"))


def dev_manifest(split: Split) -> pd.DataFrame:
    """The development share of the held-out side (``split.dev_fraction``; empty by default), canonical order."""
    return canonical_order(_rows(split.dev, "real"))


def load_tensors(manifest: pd.DataFrame, class_names: list[str], mode: str, size: int,
                 cache_dir: str | Path, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images (N, C, size, size), int64 label indices) for a manifest, decoded once and cached."""
    images = load_image_tensors(manifest["path"].tolist(), manifest["sha256"].tolist(), mode, size,
                                cache_dir=cache_dir, progress=progress)
    index = {name: i for i, name in enumerate(class_names)}
    labels = torch.tensor([index[str(label)] for label in manifest["label"]], dtype=torch.long)
    return images, labels


class BatchMaker:
    """uint8 batch -> normalised float batch, with the arm's MONAI augmentation when it has one."""

    def __init__(self, mean: list[float], std: list[float], config: ClassifierConfig, augment: bool) -> None:
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)
        self.augment = BatchAugment(config.augment) if augment else None

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None,
                 train: bool = False) -> torch.Tensor:
        x = images.float().div_(255.0)
        if train and self.augment is not None:
            if generator is None:
                raise ValueError("augmented batches need the fit's torch generator (determinism)")
            x = self.augment(x, generator)
        return (x - self.mean) / self.std
