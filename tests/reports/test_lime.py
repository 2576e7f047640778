"""LIME on a stored fit: reproducible, batched == LIME's own loop, grayscale segmentation, quantification."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.run_record import read_run_record
from reports.lime_explain import (KINDS, explain, explain_stage, load_explanations, load_fit, map_similarity,
                                  segmenter, select_real, settings_with, top_evidence,
                                  top_region)


@pytest.fixture(scope="module")
def stored(finished_run):
    stages = read_run_record(finished_run.run_dir)["stages"]
    records, arrays, comparison, summary = load_explanations(stages["explain"]["directory"])
    return stages, records, arrays, summary


def _image(arrays, index: int) -> torch.Tensor:
    return torch.from_numpy(arrays["images"][index][..., :1].copy()).permute(2, 0, 1)  # grayscale (1, H, W)


def test_same_seed_same_explanation_and_it_matches_the_stored_one(finished_run, stored) -> None:
    _, records, arrays, _ = stored
    record = records[0]
    classifier = load_fit(finished_run.runs_root, "demo", record["fit_key"])
    settings = finished_run.config.report
    label = classifier.class_names.index(record["predicted_label"])
    first = explain(classifier, _image(arrays, 0), [label], settings, seed=11)
    second = explain(classifier, _image(arrays, 0), [label], settings, seed=11)
    assert np.array_equal(first.segments, second.segments)
    assert np.array_equal(first.weights[label], second.weights[label])
    other = explain(classifier, _image(arrays, 0), [label], settings, seed=12)
    assert not np.array_equal(first.weights[label], other.weights[label])
    stage_seed = explain(classifier, _image(arrays, 0), [label], settings, seed=finished_run.config.seed)
    assert np.allclose(stage_seed.importance_map(label), arrays["maps_pred"][0], atol=1e-6)


def test_batched_explainer_gives_lime_defaults_explanation(finished_run, stored) -> None:
    _, records, arrays, _ = stored
    classifier = load_fit(finished_run.runs_root, "demo", records[1]["fit_key"])
    settings = settings_with(finished_run.config.report, batch_size=64)
    batched = explain(classifier, _image(arrays, 1), [0, 1], settings, seed=5, batched=True)
    plain = explain(classifier, _image(arrays, 1), [0, 1], settings, seed=5, batched=False)
    assert np.array_equal(batched.segments, plain.segments)
    for label in (0, 1):
        assert np.allclose(batched.weights[label], plain.weights[label], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", ["slic", "quickshift", "felzenszwalb"])
def test_segmentation_on_grayscale_numbers_superpixels_from_zero(finished_run, stored, method) -> None:
    _, _, arrays, _ = stored
    gray = np.repeat(arrays["images"][0][..., :1], 3, axis=2).astype(np.float64)
    settings = settings_with(finished_run.config.report, segmentation=method, n_segments=12)
    labels = segmenter(settings, seed=0)(gray)
    assert labels.shape == gray.shape[:2]
    assert np.array_equal(np.unique(labels), np.arange(labels.max() + 1))
    # LIME's default quickshift parameters are coarse (~8 superpixels at 128 px, maybe 1 at 32 px): why SLIC is ours
    assert labels.max() + 1 >= (1 if method == "quickshift" else 2)


def test_stage_records_are_complete_and_the_stage_is_cached(finished_run, stored) -> None:
    stages, records, arrays, summary = stored
    assert stages["explain"]["cached"] is False
    assert len(records) == len(arrays["images"]) == len(arrays["maps_pred"]) == summary["explanations"]
    assert {r["source"] for r in records} == {"real", "synthetic"}
    assert {r["kind"] for r in records if r["source"] == "real"} <= set(KINDS)
    for r in records:
        assert len(r["top_weights"]) == min(finished_run.config.report.top_k, r["n_segments"])
        assert 0.0 <= r["positive_share"] <= 1.0 + 1e-9
    again = explain_stage(finished_run.config, stages["classifiers"]["results"], stages["synthesis"]["manifest"],
                          progress=False)
    assert again.cached and again.key == stages["explain"]["key"]


def test_quantification_on_known_values() -> None:
    weights = np.array([0.5, -0.2, 0.3, 0.0, 0.2])
    top = top_evidence(weights, 2)
    assert top["top_segments"] == [0, 2] and top["top_weights"] == [0.5, 0.3]
    assert top["positive_share"] == pytest.approx(0.8 / 1.0)
    a = np.zeros((4, 4))
    a[:2, :2] = 1.0
    assert top_region(a, 0.25).sum() == 4
    same = map_similarity(a, a, 0.25)
    assert same["correlation"] == pytest.approx(1.0) and same["iou_top"] == 1.0
    b = np.zeros((4, 4))
    b[2:, 2:] = 1.0
    assert map_similarity(a, b, 0.25)["iou_top"] == 0.0
    assert np.isnan(map_similarity(a, np.zeros((4, 4)), 0.25)["correlation"])


def test_image_selection_per_class() -> None:
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.55, 0.45], [0.3, 0.7], [0.1, 0.9]])
    y = np.array([0, 0, 0, 0, 1, 1])
    chosen = select_real(probs, y, 2, 1)
    assert chosen == [(0, "confident-correct"), (2, "misclassified"), (3, "most-uncertain"),
                      (5, "confident-correct"), (4, "most-uncertain")]  # class 1 has no mistake
