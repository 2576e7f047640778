"""The reference classifier: CNNs trained on the real 20% sample ONLY, k-fold cross-validated.

It judges synthetic images without peeking at the held-out 80%:

    ref = load_reference(reference_stage(config, split_path).directory)
    ref.predict_proba(images)             # uint8 (N, C, H, W) -> (N, classes), mean over the fold models
    ref.out_of_fold_proba(images, seeds)  # each image judged by the fold model that never trained on its seed
    ref.features(images)                  # penultimate-layer features (N, D), mean over the fold models
    ref.fold_features(images, folds)      # image i embedded by fold model folds[i] only (out of fold for real ones)
    classification_accuracy_score(ref, images, labels)   # per-class agreement + confusion matrix

The classification accuracy score (CAS, Ravuri & Vinyals 2019; Azizi et al. 2023 use it to pick
guidance) asks the reference for the class of each synthetic image: a class whose synthetic images
the reference does not recognise carries no usable signal for that class.

Training uses the classifier panel's building blocks (classifiers.weights.build_model, timm's
resolve_input_data_config for the normalisation, pipeline.folds folds on content-hash order) on
the split's TRAIN side only: ``classifiers.architectures[0]`` at ``classifiers.image_size``, ``synthesis.reference_steps``
AdamW steps per fold (the generator's light flip/affine augmentation), the weights with the
lowest validation-fold loss kept. It does not reuse the classifier stage's ``real`` arm fits on
purpose: those evaluate the held-out set inside every fit, and nothing on the selection path may
read a held-out image (tests/test_quality_reference.py checks that by content hash). Cost: one
small fit per fold, once per (split, settings), cached under ``runs/<domain>/reference/<key>/``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import DomainConfig, hash_payload
from pipeline.store import RunStore, atomic_save_with, atomic_write_json, read_json

REFERENCE_STAGE = "reference"


@dataclass
class ReferenceOutput:
    key: str
    directory: Path
    summary: dict[str, Any]
    cached: bool = False


def reference_settings(config: DomainConfig) -> dict[str, Any]:
    cc = config.classifiers
    return {"architecture": cc.architectures[0], "image_size": cc.image_size, "folds": config.split.cv_folds,
            "batch_size": cc.batch_size, "learning_rate": cc.learning_rate, "weight_decay": cc.weight_decay,
            "pretrained": cc.pretrained, "checkpoints": sorted(cc.checkpoints.items()),
            "steps": config.synthesis.reference_steps,
            # light augmentation, the generator's own (pipeline.generator.data.augment): flips only where the
            # domain allows them, small rotation / zoom / shift
            "augment": {"flip": config.generator.augment_flip, "degrees": 10.0, "scale": 0.1, "shift": 0.05}}


def reference_stage(config: DomainConfig, split_path: str | os.PathLike[str], progress: bool = False) -> ReferenceOutput:
    """Train (or reuse) the k fold models on the split's TRAIN side; the held-out side is never loaded."""
    from pipeline.folds import canonical_order
    from classifiers.data import load_tensors
    from pipeline.image_tensors import domain_cache_dir
    from pipeline.stages import load_split

    split = load_split(split_path)
    class_names = list(config.data.class_names) or sorted(split.table["label"].astype(str).unique())
    train = canonical_order(split.train.reset_index(drop=True))
    settings = reference_settings(config)
    key = reference_key(config, split)
    store = RunStore(config.runs_root, config.name)
    directory = store.stage_dir(REFERENCE_STAGE, key)
    if store.is_complete(REFERENCE_STAGE, key):
        return ReferenceOutput(key, directory, store.read_summary(REFERENCE_STAGE, key), cached=True)

    started = time.perf_counter()
    images, labels = load_tensors(train, class_names, config.data.mode, settings["image_size"],
                                  domain_cache_dir(config.runs_root, config.name), progress)
    folds = reference_folds(config, train, class_names)
    sha = train["sha256"].astype(str).tolist()
    fold_rows = []
    for fold, (train_idx, val_idx) in enumerate(folds):
        fit = _fit_fold(config, settings, images, labels, torch.from_numpy(train_idx), torch.from_numpy(val_idx),
                        len(class_names), fold)
        atomic_save_with(directory / f"fold{fold}.pt", lambda tmp, fit=fit: torch.save(
            {"state_dict": fit["state_dict"], "architecture": settings["architecture"], "class_names": class_names,
             "in_chans": int(images.shape[1]), "image_size": settings["image_size"], "mean": fit["mean"],
             "std": fit["std"], "val_sha256s": [sha[i] for i in val_idx]}, tmp))
        fold_rows.append({k: v for k, v in fit.items() if k not in ("state_dict", "mean", "std")})
    summary = {"folds": fold_rows, "cv_accuracy": float(np.mean([r["val_accuracy"] for r in fold_rows])),
               "train_images": int(len(train)), "class_names": class_names, "settings": settings,
               "seconds": round(time.perf_counter() - started, 1)}
    atomic_write_json(directory / "summary.json", summary)
    store.mark_complete(REFERENCE_STAGE, key, summary)
    return ReferenceOutput(key, directory, summary)


def reference_key(config: DomainConfig, split: Any) -> str:
    """The reference stage's key, computed without training (selection plans and synthesis keys include it)."""
    from pipeline.folds import canonical_order

    class_names = list(config.data.class_names) or sorted(split.table["label"].astype(str).unique())
    train = split.train
    folds = reference_folds(config, canonical_order(train.reset_index(drop=True)), class_names)
    return hash_payload({"train": sorted(zip(train["sha256"].astype(str), train["label"].astype(str))),
                         "settings": reference_settings(config), "class_names": class_names,
                         "mode": config.data.mode, "seed": config.seed, "version": 1,
                         "fold_rows": hash_payload([[t.tolist(), v.tolist()] for t, v in folds])})


def reference_folds(config: DomainConfig, train: pd.DataFrame, class_names: list[str]) -> list[Any]:
    """The reference's k folds of the training sample (canonical order): patients and near-duplicate groups
    shape them, so the key hashes the folds as formed."""
    from pipeline.folds import fold_indices, groups_of

    index = {name: i for i, name in enumerate(class_names)}
    labels = np.array([index[str(label)] for label in train["label"]])
    return fold_indices(labels, groups_of(train), config.split.cv_folds, config.seed)


def _fit_fold(config: DomainConfig, settings: dict[str, Any], images: torch.Tensor, labels: torch.Tensor,
              train_idx: torch.Tensor, val_idx: torch.Tensor, num_classes: int, fold: int) -> dict[str, Any]:
    from timm.data import resolve_input_data_config

    from classifiers.weights import build_model
    from pipeline.config import GeneratorConfig

    seed = int(hash_payload([config.seed, "reference", fold]), 16) % (2**31 - 1)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model, _ = build_model(settings["architecture"], int(images.shape[1]), num_classes, settings["pretrained"],
                           dict(settings["checkpoints"]))
    data_config = resolve_input_data_config(model)  # the weights' mean/std, adapted to the model's channels
    mean, std = list(data_config["mean"]), list(data_config["std"])
    aug = settings["augment"]
    light = GeneratorConfig(augment_flip=aug["flip"], augment_affine=True, affine_degrees=aug["degrees"],
                            affine_scale=aug["scale"], affine_shift=aug["shift"])
    batches = _Batches(mean, std, light)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["learning_rate"],
                                  weight_decay=settings["weight_decay"])
    steps, size = settings["steps"], min(settings["batch_size"], len(train_idx))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=settings["learning_rate"] * 0.01)
    evaluate_every = max(1, steps // 6)
    best: dict[str, Any] = {"val_loss": float("inf")}
    order, position = train_idx[torch.randperm(len(train_idx), generator=generator)], 0
    for step in range(1, steps + 1):
        if position + size > len(order):
            order, position = train_idx[torch.randperm(len(train_idx), generator=generator)], 0
        batch = order[position:position + size]
        position += size
        model.train()
        loss = F.cross_entropy(model(batches(images[batch], generator, train=True)), labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % evaluate_every == 0 or step == steps:
            logits = _logits(model, batches, images[val_idx])
            val_loss = float(F.cross_entropy(logits, labels[val_idx]))
            if val_loss < best["val_loss"]:
                best = {"fold": fold, "step": step, "val_loss": val_loss,
                        "val_accuracy": float((logits.argmax(1) == labels[val_idx]).float().mean()),
                        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()}}
    best.update(mean=mean, std=std, n_train=int(len(train_idx)), n_val=int(len(val_idx)))
    return best


class _Batches:
    """uint8 batch -> normalised float batch; with ``train`` the light augmentation first."""

    def __init__(self, mean: list[float], std: list[float], light: Any) -> None:
        self.mean, self.std = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
        self.light = light

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None, train: bool = False) -> torch.Tensor:
        x = images.float() / 255.0
        if train:
            from pipeline.generator.data import augment

            x = augment(x, self.light, generator)
        return (x - self.mean) / self.std


@torch.no_grad()
def _logits(model: nn.Module, batches: Any, images: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    model.eval()
    return torch.cat([model(batches(images[k:k + chunk])).float() for k in range(0, len(images), chunk)])


class ReferenceClassifier:
    """The fold models of a reference stage, ready to judge image batches (uint8 or float in [0, 1])."""

    def __init__(self, models: list[nn.Module], class_names: list[str], image_size: int, mean: list[float],
                 std: list[float], val_sha256s: list[list[str]]) -> None:
        self.models, self.class_names, self.image_size = models, class_names, image_size
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)
        self.val_sha256s = val_sha256s
        self._fold_of = {sha: k for k, shas in enumerate(val_sha256s) for sha in shas}

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True,
                              align_corners=False)
        return (x - self.mean) / self.std

    @torch.no_grad()
    def fold_proba(self, images: torch.Tensor, chunk: int = 256) -> np.ndarray:
        """(folds, N, classes) softmax probabilities of every fold model."""
        out = []
        for model in self.models:
            model.eval()
            out.append(torch.cat([torch.softmax(model(self.prepare(images[k:k + chunk])).float(), 1)
                                  for k in range(0, len(images), chunk)]).numpy())
        return np.stack(out)

    def predict_proba(self, images: torch.Tensor) -> np.ndarray:
        """(N, classes): the mean of the fold models' probabilities."""
        return self.fold_proba(images).mean(0)

    def out_of_fold_proba(self, images: torch.Tensor, seed_sha256s: list[str | None]) -> np.ndarray:
        """Each image judged by the fold model whose validation fold holds its seed image (never trained on it);
        images without a known seed get the fold mean."""
        probs = self.fold_proba(images)
        pick = [self._fold_of.get(s) if s is not None else None for s in seed_sha256s]
        return np.stack([probs[k, i] if k is not None else probs[:, i].mean(0) for i, k in enumerate(pick)])

    def fold_of(self, sha256s: list[str | None]) -> list[int | None]:
        """The fold whose validation part holds each image (the one fold model that never trained on it)."""
        return [self._fold_of.get(s) if s is not None else None for s in sha256s]

    @torch.no_grad()
    def _embed(self, model: nn.Module, images: torch.Tensor, chunk: int = 256) -> np.ndarray:
        model.eval()
        head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        captured: list[torch.Tensor] = []
        hook = head.register_forward_hook(lambda _m, inputs, _o: captured.append(inputs[0].detach().flatten(1)))
        try:
            for k in range(0, len(images), chunk):
                model(self.prepare(images[k:k + chunk]))
        finally:
            hook.remove()
        return torch.cat(captured).float().numpy()

    def features(self, images: torch.Tensor, chunk: int = 256) -> np.ndarray:
        """(N, D) penultimate-layer features (the input of the last linear layer), mean over the fold models.

        In-sample for the real training images (every image is in the training part of k - 1 folds): the
        quality stage uses ``fold_features`` instead, which embeds each image with one assigned fold model.
        """
        return np.mean([self._embed(model, images, chunk) for model in self.models], axis=0)

    def fold_features(self, images: torch.Tensor, folds: list[int] | np.ndarray, chunk: int = 256) -> np.ndarray:
        """(N, D) features, image ``i`` embedded by fold model ``folds[i]`` only (no other model sees it).

        For a real training image ``folds[i]`` is its own validation fold (``fold_of``): out of fold.
        """
        folds = np.asarray(folds, dtype=int)
        if len(folds) != len(images):
            raise ValueError(f"{len(folds)} fold assignments for {len(images)} images")
        if len(folds) and (folds.min() < 0 or folds.max() >= len(self.models)):
            raise ValueError(f"fold assignments must lie in 0..{len(self.models) - 1}")
        out: np.ndarray | None = None
        for k, model in enumerate(self.models):
            rows = np.flatnonzero(folds == k)
            if len(rows) == 0:
                continue
            part = self._embed(model, images[torch.from_numpy(rows)], chunk)
            if out is None:
                out = np.zeros((len(images), part.shape[1]), dtype=np.float32)
            out[rows] = part
        return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def load_reference(directory: str | os.PathLike[str]) -> ReferenceClassifier:
    from classifiers import zoo

    files = sorted(Path(directory).glob("fold*.pt"), key=lambda p: int(p.stem[4:]))
    if not files:
        raise FileNotFoundError(f"no reference fold models in {directory}")
    models, vals = [], []
    for path in files:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = zoo.create(state["architecture"], state["in_chans"], len(state["class_names"]))
        model.load_state_dict(state["state_dict"])
        models.append(model.eval())
        vals.append(list(state["val_sha256s"]))
    return ReferenceClassifier(models, list(state["class_names"]), int(state["image_size"]), list(state["mean"]),
                               list(state["std"]), vals)


def classification_accuracy_score(reference: ReferenceClassifier, images: torch.Tensor, labels: list[int] | torch.Tensor,
                                  seed_sha256s: list[str | None] | None = None) -> dict[str, Any]:
    """Per-class agreement of the reference's predictions with the intended labels, and the confusion matrix.

    ``seed_sha256s`` (real-seeded images): judge each image out of fold, so a copy of its seed scores
    the reference's cross-validated accuracy, not its training accuracy.
    """
    labels = np.asarray(labels)
    probs = (reference.out_of_fold_proba(images, seed_sha256s) if seed_sha256s is not None
             else reference.predict_proba(images))
    predicted = probs.argmax(1)
    k = len(reference.class_names)
    confusion = np.zeros((k, k), dtype=int)
    for true, pred in zip(labels, predicted):
        confusion[true, pred] += 1
    per_class = {name: float(confusion[i, i] / confusion[i].sum()) for i, name in enumerate(reference.class_names)
                 if confusion[i].sum() > 0}
    return {"cas": float(np.mean(list(per_class.values()))) if per_class else float("nan"),
            "per_class": per_class, "confusion": confusion.tolist(), "class_names": list(reference.class_names)}


def summary_table(summary: dict[str, Any]) -> pd.DataFrame:
    """The fold rows of a reference summary as a table (fold, step, val_loss, val_accuracy, n_train, n_val)."""
    return pd.DataFrame(summary["folds"])


__all__ = ["REFERENCE_STAGE", "ReferenceClassifier", "ReferenceOutput", "classification_accuracy_score",
           "load_reference", "reference_stage", "read_json"]
