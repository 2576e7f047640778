"""How the pipeline judges images with the reference classifier, whoever trained it.

The reference classifier is the real arm's k fold models (trained on the real 20% sample only, by
classifiers/reference.py, the one training loop). pipeline/ never trains it and never imports the
floor that does: stages that need it (selection, the quality stage) receive a ``ReferenceSource``
from the wiring (flows/run.py) and call ``load()`` when they must judge images:

    judge = source.load()                   # FoldModels: the fold models, ready for inference
    judge.predict_proba(images)             # uint8 (N, C, H, W) -> (N, classes), mean over the fold models
    judge.out_of_fold_proba(images, seeds)  # each image judged by the fold model that never trained on its seed
    judge.features(images)                  # penultimate-layer features (N, D), mean over the fold models
    judge.fold_features(images, folds)      # image i embedded by fold model folds[i] only (out of fold for real ones)
    classification_accuracy_score(judge, images, labels)   # per-class agreement + confusion matrix

The classification accuracy score (CAS, Ravuri & Vinyals 2019; Azizi et al. 2023 use it to pick
guidance) asks the reference for the class of each synthetic image: a class whose synthetic images
the reference does not recognise carries no usable signal for that class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class ReferenceSource(Protocol):
    """Where the reference comes from: a key that changes whenever its fold models would, and a loader."""

    key: str

    def load(self) -> FoldModels:
        """The fold models, ready for inference (trained beforehand by the stage that produced this source)."""
        ...

    def describe(self) -> str:
        """One line for reports: which architecture, trained on what, its cross-validated accuracy."""
        ...


@dataclass
class FixedReference:
    """A ``ReferenceSource`` around fold models already in memory (tests, notebooks): its key is ``key``."""

    models: FoldModels
    key: str = "injected"

    def load(self) -> FoldModels:
        return self.models

    def describe(self) -> str:
        return "reference classifier: injected"


class FoldModels:
    """k fold models of one architecture, ready to judge image batches (uint8 or float in [0, 1]).

    ``val_sha256s[k]`` lists the real images fold model k validated on (never trained on): the key to
    every out-of-fold use below."""

    def __init__(self, models: list[nn.Module], class_names: list[str], image_size: int, mean: list[float],
                 std: list[float], val_sha256s: list[list[str]], cv_accuracy: float | None = None) -> None:
        self.models, self.class_names, self.image_size = models, class_names, image_size
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)
        self.val_sha256s = val_sha256s
        self.cv_accuracy = cv_accuracy
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


def classification_accuracy_score(reference: FoldModels, images: torch.Tensor, labels: list[int] | torch.Tensor,
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


__all__ = ["FixedReference", "FoldModels", "ReferenceSource", "classification_accuracy_score"]
