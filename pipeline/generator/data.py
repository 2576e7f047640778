"""The generator's training data: the split's TRAIN side only, decoded once, batched by step.

The held-out side is read only to prove it is disjoint from what the generator sees: the
training manifest hash and the training images' content hashes go into every checkpoint, and
``check_disjoint`` is run before training starts and whenever a checkpoint is used.

Batches are a pure function of (seed, step, process): a resumed run draws exactly the batches,
noise, timesteps and label dropout the uninterrupted run would have drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pipeline.augment import BatchAugment
from pipeline.config import AugmentConfig, DomainConfig, GeneratorConfig
from pipeline.errors import DataError, LeakageError
from pipeline.image_tensors import load_image_tensors
from pipeline.split import Split
from pipeline.store import manifest_hash

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class TrainingData:
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,), index into class_names
    class_names: list[str]
    sha256s: list[str]
    manifest_hash: str  # hash of (sha256, label) of every training image


def check_disjoint(train_sha256s: list[str], expected_hash: str, split: Split) -> None:
    """The generator's training images are exactly the split's TRAIN side and none is held out."""
    if manifest_hash(split.train) != expected_hash:
        raise LeakageError("the generator's training manifest hash does not match this split's training side; "
                           "the checkpoint was trained on different images")
    overlap = set(train_sha256s) & set(map(str, split.test["sha256"]))
    if overlap:
        raise LeakageError(f"{len(overlap)} of the generator's training images are in the held-out set "
                           f"(e.g. sha256 {sorted(overlap)[0][:12]}); refusing to train or sample")


def training_order(split: Split) -> "pd.DataFrame":
    """The split's training side in the generator's row order (content hash, then relative path)."""
    return split.train.sort_values(["sha256", "relpath"]).reset_index(drop=True)


def load_training_data(config: DomainConfig, split: Split, cache_dir: str | Path | None,
                       progress: bool = True) -> TrainingData:
    train = training_order(split)
    if train.empty:
        raise DataError("the split's training side is empty; nothing to train the generator on")
    names = config.data.resolve_class_names(split.table["label"])
    images = load_image_tensors(list(train["path"]), list(train["sha256"]), config.data.mode,
                                config.generator.image_size, cache_dir=cache_dir, progress=progress)
    labels = torch.tensor([names.index(str(v)) for v in train["label"]], dtype=torch.long)
    sha = list(map(str, train["sha256"]))
    data = TrainingData(images, labels, names, sha, manifest_hash(train))
    check_disjoint(sha, data.manifest_hash, split)
    return data


def step_generator(seed: int, step: int, process: int = 0) -> torch.Generator:
    """A CPU generator that depends only on (seed, step, process): resumable randomness."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 1024 + process) % 2**63)


def batch_indices(n: int, batch_size: int, step: int, seed: int, process: int = 0, processes: int = 1) -> torch.Tensor:
    """Indices of one process's batch at ``step``: consecutive slices of per-epoch permutations."""
    per_step = batch_size * processes
    start = step * per_step + process * batch_size
    out = []
    position = start
    while len(out) < batch_size:
        epoch, offset = divmod(position, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))
        take = min(batch_size - len(out), n - offset)
        out.extend(perm[offset:offset + take].tolist())
        position += take
    return torch.tensor(out, dtype=torch.long)


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images.float().div(127.5).sub(1.0)


def augment(x: torch.Tensor, config: GeneratorConfig, generator: torch.Generator) -> torch.Tensor:
    """Light, anatomy-respecting augmentation: optional h-flip, small rotation/zoom/shift (border fill).

    Built by pipeline.augment (MONAI), the same builder as the classifiers' real+aug arm; spatial
    transforms only, so the [-1, 1] range is kept.
    """
    return BatchAugment(light_augment_config(config), value_range=(-1.0, 1.0))(x, generator)


def light_augment_config(config: GeneratorConfig) -> AugmentConfig:
    affine = config.augment_affine
    return AugmentConfig(hflip=config.augment_flip, vflip=False,
                         rotation_deg=config.affine_degrees if affine else 0.0,
                         scale=config.affine_scale if affine else 0.0,
                         translate=config.affine_shift if affine else 0.0,
                         padding_mode="border", bias_field=0.0, contrast_gamma=[1.0, 1.0], noise_std=0.0)
