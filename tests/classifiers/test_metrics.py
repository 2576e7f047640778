"""Metrics equal scikit-learn's on a fixed prediction set; the ensemble averages probabilities."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from classifiers.metrics import classification_metrics, ensemble_probabilities

CLASSES = ["a", "b", "c"]


@pytest.fixture
def predictions() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 60)
    logits = rng.normal(size=(60, 3)) + 1.5 * np.eye(3)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, probs


def test_metrics_equal_sklearn(predictions: tuple[np.ndarray, np.ndarray]) -> None:
    y, probs = predictions
    pred = probs.argmax(1)
    out = classification_metrics(y, probs, CLASSES)
    assert out["test_accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert out["test_loss"] == pytest.approx(skm.log_loss(y, probs))
    for avg in ("macro", "weighted"):
        assert out[f"precision_{avg}"] == pytest.approx(skm.precision_score(y, pred, average=avg))
        assert out[f"recall_{avg}"] == pytest.approx(skm.recall_score(y, pred, average=avg))
        assert out[f"f1_{avg}"] == pytest.approx(skm.f1_score(y, pred, average=avg))
    per_class = skm.f1_score(y, pred, average=None)
    assert [out[f"f1[{c}]"] for c in CLASSES] == pytest.approx(per_class)
    assert out["roc_auc_ovr"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr"))
    assert json.loads(out["confusion_matrix"]) == skm.confusion_matrix(y, pred).tolist()


def test_binary_auc_uses_positive_column() -> None:
    y = np.array([0, 0, 1, 1, 1])
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.8, 0.2], [0.1, 0.9]])
    assert classification_metrics(y, probs, ["neg", "pos"])["roc_auc_ovr"] == pytest.approx(
        skm.roc_auc_score(y, probs[:, 1]))


def test_ensemble_is_mean_of_probabilities_not_a_vote() -> None:
    folds = [np.array([[0.9, 0.1]]), np.array([[0.4, 0.6]]), np.array([[0.45, 0.55]])]
    mean = ensemble_probabilities(folds)
    assert mean == pytest.approx(np.array([[0.5833333, 0.4166667]]))
    assert mean.argmax(1)[0] == 0  # a majority vote of the folds' predictions would say class 1
