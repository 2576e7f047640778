"""LIME explanations of the best classifier of each arm, on real and synthetic images, quantified.

What the explanation stage does (``explain_stage``), for every arm of a finished classifiers stage:

1. takes the arm's model chosen on validation: the architecture classifiers.choice chose for the arm,
   and of its folds the fit best on its own validation fold (the exported one); held-out results
   never choose it;
2. picks images per class: held-out real images the model got right with the highest confidence,
   got wrong with the highest confidence, and was least sure about (smallest top-1 / top-2
   margin); and synthetic images of the class;
3. explains each with ``lime.lime_image.LimeImageExplainer`` (fixed ``random_state`` *and*
   ``random_seed``: the seed alone does not make LIME reproducible, lime issue #477), on SLIC
   (or quickshift / felzenszwalb) superpixels computed on the image rendered to 3 channels, with
   the model fed exactly as in evaluation: the same cached uint8 tensors at the classifier's input
   size, the same ``BatchMaker`` normalisation, only channel 0 for grayscale domains;
4. quantifies: per explanation the top-k superpixel weights and the share of the positive
   evidence they carry; per (arm, class) the mean importance map over real and over synthetic
   images and their similarity (Pearson correlation, IoU of the top regions).

Speed: LIME builds perturbed images one at a time in Python and calls the model in batches of 10.
``BatchedLimeImageExplainer`` draws the very same random perturbations from the same random state
and builds them vectorised, feeding the model ``report.batch_size`` images per call under
``torch.inference_mode()``; on a CPU the model is traced, frozen and optimised for inference once
per fit (BatchNorm folded, oneDNN kernels; outputs equal to float rounding). Bigger batches do not
help on 2 CPU cores (measured: batch 10, 32 and 300 within 10%); the model's arithmetic does.
benchmarks/bench_lime.py measures the speed-up at the same explanation.

The stage is cached like the others: its key hashes the chosen fits' keys, the chosen images'
content hashes and the LIME settings.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from lime.lime_image import LimeImageExplainer

from classifiers.choice import best_fold, choose_per_arm
from classifiers.data import load_tensors
from classifiers.scoring import TEST, scores_path
from classifiers.predict import FittedClassifier, load_fit
from classifiers.train import FIT_STAGE
from pipeline.config import DomainConfig, ReportConfig, hash_payload
from pipeline.progress import Progress
from pipeline.store import RunStore, atomic_save_with, atomic_write_json, atomic_write_table, read_json

STAGE = "explanations"
KINDS = ("confident-correct", "misclassified", "most-uncertain")
# settings that change what an explanation is (batch size and the bootstrap do not)
_KEY_FIELDS = ("num_samples", "segmentation", "n_segments", "compactness", "top_k", "top_fraction",
               "real_per_kind", "synthetic_per_class")


def settings_with(settings: ReportConfig, **changes: Any) -> ReportConfig:
    """A copy of the report settings with some values changed (dataclass or pydantic model alike)."""
    if dataclasses.is_dataclass(settings):
        return dataclasses.replace(settings, **changes)
    return settings.model_copy(update=changes)


def settings_dict(settings: ReportConfig) -> dict[str, Any]:
    return dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else settings.model_dump()


# ----------------------------------------------------------------------------------------------
# Segmentation and the batched explainer


def segmenter(settings: ReportConfig, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """A LIME ``segmentation_fn``: (H, W, 3) image in 0..255 -> superpixel labels 0..n-1.

    The grayscale image arrives rendered to 3 identical channels (LIME's gray2rgb); the labels
    are renumbered 0..n-1 because LIME masks superpixel ``z`` as ``segments == z`` for
    z in range(n) (SLIC starts at 1 by default, which would silently never hide one superpixel).
    """
    from skimage.segmentation import felzenszwalb, quickshift, slic

    def segment(image: np.ndarray) -> np.ndarray:
        rgb = np.clip(np.asarray(image), 0, 255).astype(np.uint8)
        if settings.segmentation == "slic":
            labels = slic(rgb, n_segments=settings.n_segments, compactness=settings.compactness, start_label=0,
                          channel_axis=-1)
        elif settings.segmentation == "quickshift":  # LIME's own default parameters
            labels = quickshift(rgb, kernel_size=4, max_dist=200, ratio=0.2, rng=seed)
        else:
            side = max(rgb.shape[:2])
            labels = felzenszwalb(rgb, scale=side, sigma=0.5, min_size=max(4, side * side // (4 * settings.n_segments)))
        return np.unique(labels, return_inverse=True)[1].reshape(labels.shape).astype(np.int64)

    return segment


class BatchedLimeImageExplainer(LimeImageExplainer):
    """LIME's image explainer with the perturbation loop vectorised.

    Draws the same perturbation matrix from the same random state as LIME 0.2.0.1's
    ``data_labels`` (so the explanation is the same) and builds each batch of perturbed images
    with one ``np.where`` instead of one Python loop iteration per image and superpixel.
    """

    def data_labels(self, image: np.ndarray, fudged_image: np.ndarray, segments: np.ndarray,
                    classifier_fn: Callable[[np.ndarray], np.ndarray], num_samples: int,
                    batch_size: int = 10) -> tuple[np.ndarray, np.ndarray]:
        n_features = np.unique(segments).shape[0]
        data = self.random_state.randint(0, 2, num_samples * n_features).reshape((num_samples, n_features))
        data[0, :] = 1
        labels = []
        for start in range(0, num_samples, batch_size):
            hidden = data[start:start + batch_size][:, segments] == 0  # (b, H, W)
            images = np.where(hidden[..., None], fudged_image[None], image[None])
            labels.extend(classifier_fn(images))
        return data, np.array(labels)


@dataclass
class Explanation:
    """One explained image: the image, its superpixels, per-label superpixel weights, the model's output."""

    image: np.ndarray  # (H, W, 3) float, 0..255, as LIME saw it
    segments: np.ndarray  # (H, W) int, 0..n-1
    weights: dict[int, np.ndarray]  # label index -> weight per superpixel (n,)
    probabilities: np.ndarray  # the model's class probabilities on the unperturbed image
    score: float  # R^2 of LIME's local linear model for the last label asked for (LIME keeps only that one)

    def importance_map(self, label: int) -> np.ndarray:
        return self.weights[label][self.segments].astype(np.float32)


def explain(classifier: FittedClassifier, image_chw_uint8: torch.Tensor, labels: Sequence[int], settings: ReportConfig,
            seed: int, batched: bool = True) -> Explanation:
    """Explain one (C, H, W) uint8 image for ``labels`` (same seed and settings -> same explanation).

    ``score`` belongs to the last label in ``labels``: LIME overwrites it label by label.
    """
    image = image_chw_uint8.permute(1, 2, 0).numpy().astype(np.float64)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)  # what LIME's gray2rgb does; the model gets channel 0 back
    explainer_cls = BatchedLimeImageExplainer if batched else LimeImageExplainer
    explainer = explainer_cls(random_state=seed)
    batch_size = settings.batch_size if batched else 10
    classify = classifier.lime_classifier_fn(batch_size=max(batch_size, 1), optimised=batched)
    labels = list(dict.fromkeys(int(x) for x in labels))
    result = explainer.explain_instance(image, classify, labels=labels, top_labels=None, num_features=100000,
                                        num_samples=settings.num_samples, batch_size=batch_size,
                                        segmentation_fn=segmenter(settings, seed), random_seed=seed)
    n = int(result.segments.max()) + 1
    weights = {}
    for label in labels:
        vector = np.zeros(n)
        for feature, weight in result.local_exp[label]:
            vector[feature] = weight
        weights[label] = vector
    score = float(result.score) if np.isscalar(result.score) else float(np.asarray(result.score).ravel()[0])
    probabilities = classify(image[None])[0]
    return Explanation(image=image, segments=np.asarray(result.segments), weights=weights,
                       probabilities=probabilities, score=score)


# ----------------------------------------------------------------------------------------------
# Quantification


def top_evidence(weights: np.ndarray, k: int) -> dict[str, Any]:
    """The k superpixels with the largest weights and the share of all positive evidence they carry."""
    order = np.argsort(-weights, kind="stable")[:k]
    positive_total = float(weights[weights > 0].sum())
    top_positive = float(np.clip(weights[order], 0, None).sum())
    return {"top_segments": [int(i) for i in order], "top_weights": [float(weights[i]) for i in order],
            "positive_share": top_positive / positive_total if positive_total > 0 else 0.0}


def normalised_map(importance: np.ndarray) -> np.ndarray:
    """An importance map scaled by its largest absolute weight, so every image counts the same in a mean."""
    scale = float(np.abs(importance).max())
    return importance / scale if scale > 0 else importance


def top_region(importance: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean mask of the ``fraction`` of pixels with the highest importance (ties by position)."""
    flat = importance.ravel()
    count = max(1, int(round(fraction * flat.size)))
    mask = np.zeros(flat.size, dtype=bool)
    mask[np.argsort(-flat, kind="stable")[:count]] = True
    return mask.reshape(importance.shape)


def map_similarity(a: np.ndarray, b: np.ndarray, fraction: float) -> dict[str, float]:
    """Pearson correlation of two maps and IoU of their top regions (NaN correlation when a map is flat)."""
    x, y = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    correlation = float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else float("nan")
    ra, rb = top_region(a, fraction), top_region(b, fraction)
    iou = float((ra & rb).sum() / max(1, (ra | rb).sum()))
    return {"correlation": correlation, "iou_top": iou}


# ----------------------------------------------------------------------------------------------
# Choosing models and images


def chosen_fold_per_arm(results: pd.DataFrame, config: DomainConfig) -> pd.DataFrame:
    """One row per arm: the fold fit of the arm's validation-chosen architecture that is best on its own
    validation fold (classifiers.choice; the same fit the stage exports). No held-out number is read."""
    cc = config.classifiers
    chosen = choose_per_arm(results, cc.select_on, cc.primary_architecture)
    rows = [best_fold(results, str(r.arm), str(r.architecture), cc.select_on) for r in chosen.itertuples()]
    return pd.DataFrame(rows).reset_index(drop=True)


def select_real(probs: np.ndarray, y_true: np.ndarray, n_classes: int, per_kind: int) -> list[tuple[int, str]]:
    """(index, kind) per class: most confident correct, most confident wrong, smallest top-2 margin."""
    if per_kind <= 0:
        return []
    pred = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    ordered = np.sort(probs, axis=1)
    margin = ordered[:, -1] - ordered[:, -2] if probs.shape[1] > 1 else np.ones(len(probs))
    chosen: list[tuple[int, str]] = []
    for c in range(n_classes):
        members = np.flatnonzero(y_true == c)
        correct = members[pred[members] == c]
        wrong = members[pred[members] != c]
        picks = {
            "confident-correct": correct[np.argsort(-probs[correct, c], kind="stable")][:per_kind],
            "misclassified": wrong[np.argsort(-confidence[wrong], kind="stable")][:per_kind],
        }
        taken = set(np.concatenate(list(picks.values())).tolist())
        rest = np.array([i for i in members if i not in taken], dtype=int)
        picks["most-uncertain"] = rest[np.argsort(margin[rest], kind="stable")][:per_kind]
        for kind in KINDS:
            chosen.extend((int(i), kind) for i in picks[kind])
    return chosen


def select_synthetic(manifest: pd.DataFrame, class_names: list[str], per_class: int) -> pd.DataFrame:
    """The first ``per_class`` synthetic images of each class in manifest order (deterministic)."""
    if manifest is None or per_class <= 0:
        return pd.DataFrame(columns=["path", "sha256", "label"])
    parts = [manifest[manifest["label"].astype(str) == name].head(per_class) for name in class_names]
    return pd.concat(parts, ignore_index=True)[["path", "sha256", "label"]]


# ----------------------------------------------------------------------------------------------
# The stage


@dataclass
class ExplainOutput:
    key: str | None
    directory: Path | None
    summary: dict[str, Any]
    cached: bool = False


def explain_stage(config: DomainConfig, results_path: str | os.PathLike[str],
                  synthetic_manifest_path: str | os.PathLike[str] | None = None,
                  progress: bool = True) -> ExplainOutput:
    """Explain each arm's best model on chosen real and synthetic images; reuse a stored result."""
    settings = config.report
    if not settings.explain:
        return ExplainOutput(None, None, {"not_run": "report.explain is false in the config"})
    results = pd.read_parquet(Path(results_path).with_suffix(".parquet"))
    test = pd.read_parquet(Path(results_path).parent / "test_manifest.parquet")
    best = chosen_fold_per_arm(results, config)
    if best.empty:
        return ExplainOutput(None, None, {"not_run": "the classifiers stage has no fold results"})
    first_spec = read_json(RunStore(config.runs_root, config.name).domain_dir / FIT_STAGE / best.iloc[0]["fit_key"]
                           / "spec.json")
    class_names = list(first_spec["class_names"])
    y_test = np.array([class_names.index(str(label)) for label in test["label"]])
    synthetic = (pd.read_parquet(Path(synthetic_manifest_path).with_suffix(".parquet"))
                 if synthetic_manifest_path is not None and Path(synthetic_manifest_path).with_suffix(".parquet").is_file()
                 else None)
    synth_rows = select_synthetic(synthetic, class_names, settings.synthetic_per_class)

    plan = []  # (arm row, [(source, kind, sha256, path, true label index, test index or None)])
    for _, row in best.iterrows():
        probs = np.load(scores_path(Path(results_path).parent, TEST, row["fit_key"]))
        items = [("real", kind, str(test["sha256"].iloc[i]), str(test["path"].iloc[i]), int(y_test[i]), i)
                 for i, kind in select_real(probs, y_test, len(class_names), settings.real_per_kind)]
        items += [("synthetic", "synthetic", str(r.sha256), str(r.path), class_names.index(str(r.label)), None)
                  for r in synth_rows.itertuples()]
        plan.append((row, items))

    key = hash_payload({"fits": [row["fit_key"] for row, _ in plan],
                        "images": [[(s, k, sha) for s, k, sha, *_ in items] for _, items in plan],
                        "lime": {f: getattr(settings, f) for f in _KEY_FIELDS}, "seed": config.seed,
                        "class_names": class_names, "version": 1})
    store = RunStore(config.runs_root, config.name)
    directory = store.stage_dir(STAGE, key)
    if store.is_complete(STAGE, key):
        return ExplainOutput(key, directory, store.read_summary(STAGE, key), cached=True)

    started = time.perf_counter()
    records: list[dict[str, Any]] = []
    images, segments, maps_pred, maps_true = [], [], [], []
    report = Progress("LIME", sum(len(items) for _, items in plan), unit="image")
    for row, items in plan:
        classifier = load_fit(config.runs_root, config.name, row["fit_key"])
        size = classifier.image_size
        real_items = [it for it in items if it[0] == "real"]
        synth_items = [it for it in items if it[0] == "synthetic"]
        tensors = []
        if real_items:
            table = pd.DataFrame({"path": [it[3] for it in real_items], "sha256": [it[2] for it in real_items],
                                  "label": [class_names[it[4]] for it in real_items]})
            tensors.append(load_tensors(table, class_names, classifier.mode, size, classifier.cache_dir)[0])
        if synth_items:
            table = pd.DataFrame({"path": [it[3] for it in synth_items], "sha256": [it[2] for it in synth_items],
                                  "label": [class_names[it[4]] for it in synth_items]})
            tensors.append(load_tensors(table, class_names, classifier.mode, size, classifier.cache_dir)[0])
        pixels = torch.cat(tensors) if tensors else torch.empty(0)
        for (source, kind, sha, path, true_index, _), image in zip(real_items + synth_items, pixels):
            tick = time.perf_counter()
            probe = classifier.predict_uint8(image[None])[0]
            predicted = int(probe.argmax())
            result = explain(classifier, image, [true_index, predicted], settings, config.seed)
            evidence = top_evidence(result.weights[predicted], settings.top_k)
            records.append({
                "index": len(records), "arm": row["arm"], "architecture": row["architecture"],
                "fold": str(row["fold"]), "fit_key": row["fit_key"], "fit_f1_macro": float(row["f1_macro"]),
                "source": source, "kind": kind, "sha256": sha, "path": path,
                "true_label": class_names[true_index], "predicted_label": class_names[predicted],
                "correct": predicted == true_index, "confidence": float(result.probabilities[predicted]),
                "true_probability": float(result.probabilities[true_index]),
                "n_segments": int(result.segments.max()) + 1, "score": result.score,  # local R^2, predicted class
                **evidence, "seconds": round(time.perf_counter() - tick, 3),
            })
            images.append(np.clip(result.image, 0, 255).astype(np.uint8))
            segments.append(result.segments.astype(np.int32))
            maps_pred.append(result.importance_map(predicted))
            maps_true.append(result.importance_map(true_index))
            report.update(len(records))
        del classifier

    comparison, mean_real, mean_synth = compare_evidence(records, maps_true, class_names, settings.top_fraction)
    seconds = time.perf_counter() - started
    atomic_save_with(directory / "arrays.npz", lambda tmp: _save_npz(
        tmp, images=np.stack(images) if images else np.zeros((0, 1, 1, 3), np.uint8),
        segments=np.stack(segments) if segments else np.zeros((0, 1, 1), np.int32),
        maps_pred=np.stack(maps_pred) if maps_pred else np.zeros((0, 1, 1), np.float32),
        maps_true=np.stack(maps_true) if maps_true else np.zeros((0, 1, 1), np.float32),
        mean_real=mean_real, mean_synthetic=mean_synth))
    atomic_write_json(directory / "explanations.json", records)
    atomic_write_table(directory / "comparison.parquet", comparison)
    summary = {"explanations": len(records), "arms": [str(row["arm"]) for row, _ in plan],
               "models": {str(row["arm"]): {"architecture": row["architecture"], "fold": str(row["fold"]),
                                            "fit_key": row["fit_key"], "f1_macro": float(row["f1_macro"]),
                                            "val_accuracy": float(row["val_accuracy"]), "val_loss": float(row["val_loss"])}
                          for row, _ in plan},
               "class_names": class_names, "settings": settings_dict(settings), "seed": config.seed,
               "seconds": round(seconds, 2),
               "seconds_per_image": round(seconds / len(records), 3) if records else None}
    atomic_write_json(directory / "summary.json", summary)
    store.mark_complete(STAGE, key, summary)
    store.latest_link(STAGE, key)
    return ExplainOutput(key, directory, summary)


def compare_evidence(records: list[dict[str, Any]], maps_true: list[np.ndarray], class_names: list[str],
                     fraction: float) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Per (arm, class): mean normalised true-class importance map on real vs synthetic images, compared."""
    rows, real_means, synth_means = [], [], []
    shape = maps_true[0].shape if maps_true else (1, 1)
    for arm in sorted({r["arm"] for r in records}):
        for name in class_names:
            picked = {source: [normalised_map(maps_true[r["index"]]) for r in records
                               if r["arm"] == arm and r["true_label"] == name and r["source"] == source]
                      for source in ("real", "synthetic")}
            real = np.mean(picked["real"], axis=0) if picked["real"] else np.full(shape, np.nan, np.float32)
            synth = (np.mean(picked["synthetic"], axis=0) if picked["synthetic"]
                     else np.full(shape, np.nan, np.float32))
            both = bool(picked["real"]) and bool(picked["synthetic"])
            similarity = map_similarity(real, synth, fraction) if both else {"correlation": float("nan"),
                                                                             "iou_top": float("nan")}
            low, high = correlation_interval(picked["real"], picked["synthetic"], fraction)
            rows.append({"arm": arm, "class": name, "n_real": len(picked["real"]),
                         "n_synthetic": len(picked["synthetic"]), **similarity,
                         "correlation_low": low, "correlation_high": high})
            real_means.append(real.astype(np.float32))
            synth_means.append(synth.astype(np.float32))
    table = pd.DataFrame(rows, columns=["arm", "class", "n_real", "n_synthetic", "correlation", "iou_top",
                                        "correlation_low", "correlation_high"])
    empty = np.zeros((0, *shape), np.float32)
    return table, (np.stack(real_means) if real_means else empty), (np.stack(synth_means) if synth_means else empty)


MIN_EVIDENCE_IMAGES = 5  # per side: below this a mean-map comparison is an anecdote, and the report says so


def correlation_interval(real: list[np.ndarray], synthetic: list[np.ndarray], fraction: float,
                         resamples: int = 200, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of the real-vs-synthetic mean-map correlation, images resampled on both sides;
    (nan, nan) when either side has fewer than MIN_EVIDENCE_IMAGES images (too few to say anything)."""
    if len(real) < MIN_EVIDENCE_IMAGES or len(synthetic) < MIN_EVIDENCE_IMAGES:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    real_stack, synth_stack = np.stack(real), np.stack(synthetic)
    values = []
    for _ in range(resamples):
        a = real_stack[rng.integers(0, len(real_stack), len(real_stack))].mean(axis=0)
        b = synth_stack[rng.integers(0, len(synth_stack), len(synth_stack))].mean(axis=0)
        values.append(map_similarity(a, b, fraction)["correlation"])
    finite = np.asarray([v for v in values if np.isfinite(v)])
    if len(finite) == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(finite, [0.025, 0.975])
    return float(low), float(high)


def load_explanations(directory: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], dict[str, np.ndarray],
                                                                   pd.DataFrame, dict[str, Any]]:
    """(records, arrays, comparison table, summary) of a finished explanation stage folder."""
    directory = Path(directory)
    with np.load(directory / "arrays.npz") as arrays:
        loaded = {name: arrays[name] for name in arrays.files}
    return (read_json(directory / "explanations.json"), loaded, pd.read_parquet(directory / "comparison.parquet"),
            read_json(directory / "summary.json"))


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a handle, so numpy does not append ".npz" to the temp name
        np.savez_compressed(handle, **arrays)
