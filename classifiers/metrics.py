"""Held-out metrics from class probabilities, all computed by scikit-learn, and the fold ensemble.

One function turns (true labels, probabilities) into every number of the results table, so the
per-fold rows and the ensemble row are computed the same way. The ensemble is the mean of the
folds' probabilities (soft voting), not a vote over their predictions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
from sklearn import metrics as skm


def ensemble_probabilities(fold_probs: Sequence[np.ndarray]) -> np.ndarray:
    """Mean of the folds' (N, K) probability matrices."""
    if not fold_probs:
        raise ValueError("no fold probabilities to ensemble")
    return np.mean(np.stack([np.asarray(p, dtype=np.float64) for p in fold_probs]), axis=0)


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str]) -> dict[str, object]:
    """Loss, accuracy, precision/recall/F1 (macro, weighted, per class), confusion matrix, OvR ROC-AUC."""
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    labels = list(range(len(class_names)))
    y_pred = probs.argmax(axis=1)
    out: dict[str, object] = {
        "test_loss": float(skm.log_loss(y_true, _normalised(np.clip(probs, 1e-12, 1.0)), labels=labels)),
        "test_accuracy": float(skm.accuracy_score(y_true, y_pred)),
    }
    for average in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, average=average,
                                                         zero_division=0)
        out.update({f"precision_{average}": float(p), f"recall_{average}": float(r), f"f1_{average}": float(f)})
    p, r, f, support = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, average=None,
                                                           zero_division=0)
    for i, name in enumerate(class_names):
        out.update({f"precision[{name}]": float(p[i]), f"recall[{name}]": float(r[i]), f"f1[{name}]": float(f[i]),
                    f"support[{name}]": int(support[i])})
    out["roc_auc_ovr"] = roc_auc(y_true, probs, labels)
    out["confusion_matrix"] = json.dumps(skm.confusion_matrix(y_true, y_pred, labels=labels).tolist())
    return out


def roc_auc(y_true: np.ndarray, probs: np.ndarray, labels: list[int]) -> float:
    """One-vs-rest macro ROC-AUC; NaN when a class is absent from ``y_true`` (undefined, not zero)."""
    if len(set(y_true.tolist())) < len(labels):
        return math.nan
    if len(labels) == 2:
        return float(skm.roc_auc_score(y_true, probs[:, 1]))
    rows = _normalised(probs)
    return float(skm.roc_auc_score(y_true, rows, multi_class="ovr", average="macro", labels=labels))


def _normalised(probs: np.ndarray) -> np.ndarray:
    """Rows summing to 1 in float64 (float32 softmax rows are off by ~1e-7; scikit-learn warns on that)."""
    return probs / probs.sum(axis=1, keepdims=True)
