"""The training data of each arm, as cached tensors, and the classic augmentation of ``real+aug``.

Arms (the same protocol for each; only the training data differs):

    synthetic        the generator's balanced synthetic set only (the study's arm)
    real             the 20% real sample only
    real+aug         the 20% real sample with flips, rotations and scaling on every batch
    real+synthetic   the 20% real sample and the synthetic set together

Images are decoded and resized once per run (pipeline.image_tensors caches them by content hash)
and kept as uint8; a batch is converted to float, augmented and normalised on the fly, which
costs little next to a CNN step.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from classifiers.cv import canonical_order
from pipeline.config import ClassifierConfig
from pipeline.errors import DataError
from pipeline.image_tensors import load_image_tensors
from pipeline.split import Split

NEEDS_SYNTHETIC: frozenset[str] = frozenset({"synthetic", "real+synthetic"})
AUGMENTED: frozenset[str] = frozenset({"real+aug"})
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
    out["source"] = source
    return out


def arm_manifest(arm: str, split: Split, synthetic: pd.DataFrame | None) -> pd.DataFrame:
    """Rows (path, sha256, label, patient_id, source) the arm trains and validates on, in canonical order."""
    parts = []
    if arm in ("real", "real+aug", "real+synthetic"):
        parts.append(_rows(split.train, "real"))
    if arm in NEEDS_SYNTHETIC:
        if synthetic is None:
            raise DataError(f"arm {arm!r} needs a synthetic manifest")
        parts.append(_rows(synthetic, "synthetic"))
    if not parts:
        raise DataError(f"unknown arm {arm!r}")
    table = pd.concat(parts, ignore_index=True).drop_duplicates("sha256", keep="first")
    return canonical_order(table)


def held_out_manifest(split: Split) -> pd.DataFrame:
    """The held-out 80% real set, in canonical order."""
    return canonical_order(_rows(split.test, "real"))


def load_tensors(manifest: pd.DataFrame, class_names: list[str], mode: str, size: int,
                 cache_dir: str | Path, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images (N, C, size, size), int64 label indices) for a manifest, decoded once and cached."""
    images = load_image_tensors(manifest["path"].tolist(), manifest["sha256"].tolist(), mode, size,
                                cache_dir=cache_dir, progress=progress)
    index = {name: i for i, name in enumerate(class_names)}
    labels = torch.tensor([index[str(label)] for label in manifest["label"]], dtype=torch.long)
    return images, labels


class BatchMaker:
    """uint8 batch -> normalised float batch, with the arm's augmentation when it has one."""

    def __init__(self, mean: list[float], std: list[float], config: ClassifierConfig, augment: bool) -> None:
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)
        self.config = config
        self.augment = augment

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None,
                 train: bool = False) -> torch.Tensor:
        x = images.float().div_(255.0)
        if train and self.augment:
            x = augment_batch(x, self.config, generator)
        return (x - self.mean) / self.std


def augment_batch(x: torch.Tensor, config: ClassifierConfig, generator: torch.Generator | None) -> torch.Tensor:
    """Random flips, rotation and isotropic scaling per image (one affine resample, zero fill)."""
    n = x.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator)

    if config.augment_hflip:
        flip = torch.rand(n, generator=generator) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    if config.augment_vflip:
        flip = torch.rand(n, generator=generator) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-2), x)
    angle = uniform(-config.augment_rotation_deg, config.augment_rotation_deg) * (math.pi / 180.0)
    scale = uniform(*config.augment_scale)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale  # output->input map: inverse scale
    theta = torch.stack([torch.stack([cos, -sin, torch.zeros(n)], 1), torch.stack([sin, cos, torch.zeros(n)], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
