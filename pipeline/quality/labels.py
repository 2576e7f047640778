"""Label consistency: does a classifier trained on the real 20% sample recognise each synthetic image's class?

``label_consistency(probabilities, requested, class_names)`` works on any (N, classes) probability array:
per-class agreement (the share of a class's synthetic images predicted as that class), their mean
(the classification accuracy score, CAS), the overall share, the confusion matrix (rows: requested
class, columns: predicted) and, given a confidence, which images are *confidently wrong* (predicted as
another class with probability >= the confidence), the optional filter of ``quality.label_filter_confidence``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class LabelConsistency:
    class_names: list[str]
    per_class: dict[str, float]  # agreement per requested class
    cas: float  # mean of per_class (classes weigh equally)
    overall: float  # share of all images predicted as requested
    confusion: list[list[int]]  # rows requested, columns predicted
    predicted: np.ndarray = field(repr=False)  # predicted class index per image
    confidence: np.ndarray = field(repr=False)  # probability of the predicted class

    def confidently_wrong(self, requested: np.ndarray, threshold: float | None) -> np.ndarray:
        if threshold is None:
            return np.zeros(len(self.predicted), dtype=bool)
        return (self.predicted != requested) & (self.confidence >= threshold)

    def to_json(self) -> dict[str, object]:
        return {"class_names": self.class_names, "per_class_agreement": self.per_class, "cas": self.cas,
                "overall_agreement": self.overall, "confusion": self.confusion}


def label_consistency(probabilities: np.ndarray, requested: np.ndarray, class_names: list[str]) -> LabelConsistency:
    probabilities = np.asarray(probabilities, dtype=np.float64)
    requested = np.asarray(requested, dtype=int)
    if probabilities.shape != (len(requested), len(class_names)):
        raise ValueError(f"probabilities {probabilities.shape} do not match {len(requested)} images x "
                         f"{len(class_names)} classes")
    predicted = probabilities.argmax(axis=1)
    k = len(class_names)
    confusion = np.bincount(requested * k + predicted, minlength=k * k).reshape(k, k)
    per_class = {name: float(confusion[i, i] / confusion[i].sum()) for i, name in enumerate(class_names)
                 if confusion[i].sum() > 0}
    return LabelConsistency(class_names=list(class_names), per_class=per_class,
                            cas=float(np.mean(list(per_class.values()))) if per_class else float("nan"),
                            overall=float((predicted == requested).mean()) if len(requested) else float("nan"),
                            confusion=confusion.tolist(), predicted=predicted,
                            confidence=probabilities.max(axis=1) if len(requested) else np.zeros(0))
