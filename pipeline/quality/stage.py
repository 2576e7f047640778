"""The quality stage: fidelity, diversity, memorisation and label consistency of a synthetic set.

    out = quality_stage(config, split_path, synthesis_manifest_path)
    out.manifest_path    # the synthetic manifest the classifiers should train on (filtered when configured)
    out.directory        # runs/<domain>/quality/<key>/

Everything is judged against the split's TRAIN side only (the real 20% sample the generator saw); the
held-out 80% is never decoded (``assert_training_only`` checks every real image's content hash).

The key hashes the split, the synthetic set's content hashes, the metric settings, the reference
classifier's key and the extractors' availability; the gate and the filters are applied on every call
from the stored per-image table, so changing a threshold does not recompute anything.

Outputs: ``quality.json`` and ``gate.json`` (their fields are the typed models of
``pipeline.quality.schema``, documented there) and the tables listed in that module's docstring.
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

from pipeline.config import DomainConfig, hash_payload
from pipeline.errors import DataError, LeakageError
from pipeline.image_tensors import domain_cache_dir, load_image_tensors
from pipeline.quality.features import (DomainExtractor, ExtractorUnavailable, InceptionExtractor,
                                       pixel_features)
from pipeline.quality.gate import apply_filters_and_gate, pick_metric
from pipeline.quality.judge import ReferenceSource
from pipeline.quality.labels import label_consistency
from pipeline.quality.memorisation import check_space, flagged_per_class
from pipeline.quality.metrics import frechet_distance, kernel_distance, ms_ssim_diversity, precision_recall
from pipeline.quality.oof import MEAN_OF_FOLDS, embedding_table, fold_assignment, real_halves, seed_sha256s
from pipeline.quality.schema import QualityReport, SCHEMA
from pipeline.split import Split
from pipeline.store import RunStore, atomic_write_json, atomic_write_table


STAGE = "quality"
KEY_VERSION = 2  # 2: out-of-fold domain features and label agreement, group-aware real halves, KID without fake spread
LABELS = {"kid": "KID (unbiased polynomial-kernel MMD^2)", "precision": "improved precision (k-NN)",
          "recall": "improved recall (k-NN)", "ms_ssim": "MS-SSIM within class (lower = more diverse)"}


@dataclass
class QualityOutput:
    key: str
    directory: Path
    manifest_path: Path  # what the classifiers train on: the synthesis manifest, or the filtered copy
    summary: dict[str, Any]
    gate: dict[str, Any]
    cached: bool = False


def assert_training_only(sha256s: list[str], split: Split) -> None:
    """Every real image the stage decodes is on the split's TRAIN side; none is held out."""
    train = set(map(str, split.train["sha256"]))
    test = set(map(str, split.test["sha256"]))
    used = set(sha256s)
    if used & test or not used <= train:
        raise LeakageError(f"the quality stage was about to read {len(used & test)} held-out image(s); it may "
                           f"only read the split's training side")


def build_extractors(config: DomainConfig, reference: Any | None) -> tuple[list[Any], dict[str, dict[str, Any]]]:
    """The configured extractors that can run here, and a note for every configured one."""
    q = config.quality
    usable, info = [], {}
    for name in q.extractors:
        if name == "domain":
            if reference is None:
                info[name] = {"available": False, "label": DomainExtractor.label,
                              "note": "domain features skipped: no reference classifier was given"}
                continue
            extractor = DomainExtractor(reference.features, "penultimate layer of the reference classifier "
                                        "trained on the real 20% sample only; each real image embedded by the "
                                        "fold model that never trained on it",
                                        fold_features=getattr(reference, "fold_features", None))
            usable.append(extractor)
            info[name] = {"available": True, "label": extractor.label, "note": extractor.description}
        elif name == "inception":
            extractor = InceptionExtractor(q.inception_weights, q.inception_download)
            try:
                extractor.load()
            except ExtractorUnavailable as exc:
                info[name] = {"available": False, "label": extractor.label, "note": str(exc)}
                continue
            usable.append(extractor)
            info[name] = {"available": True, "label": extractor.label, "note": "torchvision ImageNet weights"}
    return usable, info


def fidelity_rows(extractor: Any, real_a: np.ndarray, real_b: np.ndarray, synthetic: np.ndarray,
                  labels_a: np.ndarray, labels_b: np.ndarray, labels_s: np.ndarray, class_names: list[str],
                  config: DomainConfig) -> list[dict[str, Any]]:
    """Fréchet distance, KID, precision and recall: synthetic vs half A, and half B vs half A, per class and all."""
    q = config.quality
    rows = []
    rng = np.random.default_rng(config.seed)
    for name in [*class_names, "all"]:
        a = real_a if name == "all" else real_a[labels_a == name]
        # the synthetic side and half B get the same size per class (the smaller of the two), so the
        # synthetic value and its real-vs-real reference share the sample-size bias of FD, KID and P/R
        classes = class_names if name == "all" else [name]
        pick_s, pick_b = [], []
        for c in classes:
            rows_s, rows_b = np.flatnonzero(labels_s == c), np.flatnonzero(labels_b == c)
            n = min(len(rows_s), len(rows_b))
            pick_s.append(rng.permutation(rows_s)[:n])
            pick_b.append(rng.permutation(rows_b)[:n])
        s, b = synthetic[np.sort(np.concatenate(pick_s))], real_b[np.sort(np.concatenate(pick_b))]
        base = {"extractor": extractor.name, "class": name, "n_real": len(a), "n_synthetic": len(s),
                "n_reference": len(b), "synthetic_std": None, "reference_std": None}
        if min(len(a), len(b), len(s)) < max(2, q.pr_k + 1):
            continue
        rows.append({**base, "metric": "frechet_distance", "label": extractor.label, "higher_is_better": False,
                     "synthetic": frechet_distance(a, s), "reference": frechet_distance(a, b)})
        kid_s = kernel_distance(a, s, q.kid_subsets, q.kid_subset_size, config.seed)
        kid_r = kernel_distance(a, b, q.kid_subsets, q.kid_subset_size, config.seed)
        rows.append({**base, "metric": "kid", "label": f"{LABELS['kid']}, {extractor.name} features",
                     "higher_is_better": False, "synthetic": kid_s.mean, "synthetic_std": kid_s.std,
                     "reference": kid_r.mean, "reference_std": kid_r.std})
        pr_s, pr_r = precision_recall(a, s, q.pr_k), precision_recall(a, b, q.pr_k)
        for metric in ("precision", "recall"):
            rows.append({**base, "metric": metric, "label": f"{LABELS[metric]}, k={q.pr_k}, {extractor.name} features",
                         "higher_is_better": True, "synthetic": getattr(pr_s, metric),
                         "reference": getattr(pr_r, metric)})
    return rows


def diversity_rows(real: torch.Tensor, synthetic: torch.Tensor, labels_r: np.ndarray, labels_s: np.ndarray,
                   class_names: list[str], config: DomainConfig) -> list[dict[str, Any]]:
    rows = []
    pairs = config.quality.msssim_pairs
    for name in class_names:
        r, s = real[torch.from_numpy(labels_r == name)], synthetic[torch.from_numpy(labels_s == name)]
        if len(r) < 2 or len(s) < 2:
            continue
        rows.append({"metric": "ms_ssim", "label": LABELS["ms_ssim"], "extractor": "pixels", "class": name,
                     "synthetic": ms_ssim_diversity(s, pairs, config.seed),
                     "reference": ms_ssim_diversity(r, pairs, config.seed), "synthetic_std": None,
                     "reference_std": None, "n_real": len(r), "n_synthetic": len(s), "n_reference": len(r),
                     "higher_is_better": None})
    return rows


def quality_key(config: DomainConfig, split: Split, synthetic: pd.DataFrame, reference_key: str,
                extractor_info: dict[str, dict[str, Any]]) -> str:
    settings = {k: v for k, v in config.to_dict()["quality"].items()
                if k not in ("gate", "drop_memorised", "label_filter_confidence", "enabled")}
    return hash_payload({"training_hash": split.training_hash, "synthetic": sorted(zip(synthetic["sha256"].astype(str),
                                                                                   synthetic["label"].astype(str))),
                         "quality": settings, "image_size": config.generator.image_size, "mode": config.data.mode,
                         "seed": config.seed, "reference": reference_key,
                         "extractors": {k: v["available"] for k, v in extractor_info.items()}, "version": [SCHEMA, KEY_VERSION]})


def quality_stage(config: DomainConfig, split_path: str | os.PathLike[str],
                  synthesis_manifest_path: str | os.PathLike[str], progress: bool = True,
                  reference: ReferenceSource | None = None, extractors: list[Any] | None = None) -> QualityOutput:
    """Measure the synthetic set against the real training sample; apply filters and the gate.

    ``reference`` is where the reference classifier comes from: flows/run.py passes the ``reference``
    stage's output (the real arm's fold models); tests pass ``FixedReference(stand_in)``. Without one the
    domain features and the label check are skipped, with a note. ``extractors`` are injectable too; by
    default the configured ones are built.
    """
    from pipeline.stages import load_split

    split = load_split(split_path)
    synthetic = pd.read_parquet(synthesis_manifest_path) if str(synthesis_manifest_path).endswith(".parquet") \
        else pd.read_csv(synthesis_manifest_path)
    if synthetic.empty:
        raise DataError(f"synthetic manifest {synthesis_manifest_path} lists no images")
    class_names = config.data.resolve_class_names(split.table["label"])
    notes: list[str] = []
    judge, reference_key = None, "none"
    if reference is not None:
        judge, reference_key = reference.load(), reference.key
        notes.append(reference.describe())
    if extractors is None:
        extractors, extractor_info = build_extractors(config, judge)
    else:
        extractor_info = {e.name: {"available": True, "label": e.label, "note": "injected"} for e in extractors}
    notes += [f"{name}: {info['note']}" for name, info in extractor_info.items() if not info["available"]]

    key = quality_key(config, split, synthetic, reference_key, extractor_info)
    store = RunStore(config.runs_root, config.name)
    directory = store.stage_dir(STAGE, key)
    cached = store.is_complete(STAGE, key)
    if cached:
        summary = store.read_summary(STAGE, key)
    else:
        started = time.perf_counter()
        summary = _measure(config, split, synthetic, class_names, judge, extractors, extractor_info, notes,
                           directory, key, progress)
        summary["seconds"] = round(time.perf_counter() - started, 2)
        store.mark_complete(STAGE, key, summary)
        store.latest_link(STAGE, key)
    manifest_path, gate = apply_filters_and_gate(config, directory, Path(synthesis_manifest_path))
    return QualityOutput(key, directory, manifest_path, summary, gate, cached)


def _measure(config: DomainConfig, split: Split, synthetic: pd.DataFrame, class_names: list[str], reference: Any,
             extractors: list[Any], extractor_info: dict[str, dict[str, Any]], notes: list[str], directory: Path,
             key: str, progress: bool) -> dict[str, Any]:
    q = config.quality
    size = config.generator.image_size
    train = split.train.sort_values(["label", "sha256"]).reset_index(drop=True)
    train_sha = train["sha256"].astype(str).tolist()
    assert_training_only(train_sha, split)
    real = load_image_tensors(train["path"].tolist(), train_sha, config.data.mode, size,
                              cache_dir=domain_cache_dir(config.runs_root, config.name), progress=progress)
    fake = load_image_tensors(synthetic["path"].astype(str).tolist(), synthetic["sha256"].astype(str).tolist(),
                              config.data.mode, size, cache_dir=None, progress=progress)
    labels_r = train["label"].astype(str).to_numpy()
    labels_s = synthetic["label"].astype(str).to_numpy()
    in_a = real_halves(train, config.seed)

    seeds = seed_sha256s(synthetic)
    folds_r, folds_s = fold_assignment(reference, train_sha, labels_r, labels_s, seeds)
    embedded = pd.concat([embedding_table("real", train_sha, labels_r, folds_r if folds_r is not None
                                          else np.full(len(train), MEAN_OF_FOLDS)),
                          embedding_table("synthetic", synthetic["sha256"].astype(str).tolist(), labels_s,
                                          folds_s if folds_s is not None else np.full(len(synthetic), MEAN_OF_FOLDS))])
    atomic_write_table(directory / "embedding.parquet", embedded.reset_index(drop=True))
    if folds_r is None:
        notes.append("domain features: the mean over the reference's models for every image (no fold information: "
                     "real training images are embedded in sample)")

    metric_rows: list[dict[str, Any]] = []
    features: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for extractor in extractors:
        by_fold = getattr(extractor, "fold_features", None)
        if by_fold is not None and folds_r is not None:
            real_f, fake_f = np.asarray(by_fold(real, folds_r)), np.asarray(by_fold(fake, folds_s))
        else:
            real_f, fake_f = extractor(real), extractor(fake)
        features[extractor.name] = (real_f, fake_f)
        metric_rows += fidelity_rows(extractor, real_f[in_a], real_f[~in_a], fake_f, labels_r[in_a], labels_r[~in_a],
                                     labels_s, class_names, config)
    metric_rows += diversity_rows(real, fake, labels_r, labels_s, class_names, config)
    metrics = pd.DataFrame(metric_rows, columns=["metric", "label", "extractor", "class", "synthetic", "synthetic_std",
                                                 "reference", "reference_std", "n_real", "n_synthetic", "n_reference",
                                                 "higher_is_better"])
    atomic_write_table(directory / "metrics.parquet", metrics)

    # memorisation: pixel space always, feature space with the domain (else the first) extractor
    groups = [None if g is None or pd.isna(g) else g for g in train.get("dup_group", pd.Series([None] * len(train)))]
    spaces = {"pixel": check_space(pixel_features(fake), pixel_features(real), "pixel", q.memorisation_quantile, groups)}
    feature_name = "domain" if "domain" in features else next(iter(features), None)
    if feature_name is not None:
        real_f, fake_f = features[feature_name]
        spaces["feature"] = check_space(fake_f, real_f, "feature", q.memorisation_quantile, groups)
    memorised = np.zeros(len(synthetic), dtype=bool)
    for result in spaces.values():
        memorised |= result.flagged
    per_image = pd.DataFrame({"relpath": synthetic.get("relpath", synthetic["path"]).astype(str),
                              "label": labels_s, "sha256": synthetic["sha256"].astype(str)})
    for name, result in spaces.items():
        per_image[f"{name}_distance"] = result.distances
        per_image[f"{name}_nn_ratio"] = result.ratio
        per_image[f"{name}_neighbour"] = train["relpath"].to_numpy()[result.neighbour]
    if "feature" not in spaces:
        per_image["feature_distance"], per_image["feature_neighbour"] = np.nan, None
    per_image["memorised"] = memorised

    consistency = None
    if reference is not None:
        # real-seeded images by the fold model that never trained on their seed; the others by the fold mean
        probabilities = np.asarray(reference.out_of_fold_proba(fake, seeds)
                                   if seeds is not None and hasattr(reference, "out_of_fold_proba")
                                   else reference.predict_proba(fake))
        requested = np.array([class_names.index(v) for v in labels_s])
        consistency = label_consistency(probabilities, requested, class_names)
        per_image["predicted"] = [class_names[i] for i in consistency.predicted]
        per_image["confidence"] = consistency.confidence
        per_image["agrees"] = consistency.predicted == requested
    else:
        per_image["predicted"], per_image["confidence"], per_image["agrees"] = None, np.nan, None
    atomic_write_table(directory / "per_image.parquet", per_image)

    pairs = save_closest_pairs(directory, fake, real, spaces, per_image, train, q.closest_pairs)
    flagged = flagged_per_class(labels_s, memorised, class_names)
    report = QualityReport.model_validate({
        "domain": config.name, "key": key,
        "sizes": {"synthetic": int(len(synthetic)), "real_train": int(len(train)), "real_half_a": int(in_a.sum()),
                  "real_half_b": int((~in_a).sum())},
        "extractors": extractor_info,
        "metrics": metrics.replace({np.nan: None}).to_dict(orient="records"),
        "memorisation": {"quantile": q.memorisation_quantile,
                         "spaces": {name: {"threshold": r.threshold, "calibration_median": float(np.median(r.calibration)),
                                           "nn_ratio_median": float(np.median(r.ratio)),
                                           "copy_fraction": float(r.copies.mean())} for name, r in spaces.items()},
                         "feature_extractor": feature_name, "per_class": flagged,
                         "flagged_fraction": float(memorised.mean()), "closest_pairs": pairs},
        "label_consistency": {**consistency.to_json(), "reference_cv_accuracy": getattr(reference, "cv_accuracy", None)}
        if consistency is not None else None,
        "notes": notes,
    })
    atomic_write_json(directory / "quality.json", report.to_json())
    return {"synthetic": int(len(synthetic)), "real_train": int(len(train)),
            "extractors": {k: v["available"] for k, v in extractor_info.items()},
            "flagged_fraction": report.memorisation.flagged_fraction,
            "cas": consistency.cas if consistency is not None else None,
            "reference_cv_accuracy": getattr(reference, "cv_accuracy", None),
            "domain_fd": pick_metric(metrics, "frechet_distance", "domain"), "notes": notes}


def save_closest_pairs(directory: Path, fake: torch.Tensor, real: torch.Tensor, spaces: dict[str, Any],
                       per_image: pd.DataFrame, train: pd.DataFrame, count: int) -> list[dict[str, Any]]:
    """The ``count`` synthetic images closest to a training image (distance / threshold, either space)."""
    from pipeline.imageio import save_png

    if count == 0 or len(per_image) == 0:
        return []
    ratio = np.min(np.stack([r.distances / max(r.threshold, 1e-12) for r in spaces.values()]), axis=0)
    pairs = []
    for rank, i in enumerate(np.argsort(ratio, kind="stable")[:count], start=1):
        space = min(spaces.values(), key=lambda r: r.distances[i] / max(r.threshold, 1e-12))
        j = int(space.neighbour[i])
        gap = torch.full((fake.shape[1], fake.shape[2], 4), 255, dtype=torch.uint8)
        image = torch.cat([fake[i], gap, real[j]], dim=2).permute(1, 2, 0).numpy()
        name = f"pairs/pair-{rank:02d}.png"
        save_png(image[:, :, 0] if image.shape[2] == 1 else image, directory / name)
        pairs.append({"rank": rank, "image": name, "synthetic": per_image["relpath"].iloc[i],
                      "training": str(train["relpath"].iloc[j]), "label": per_image["label"].iloc[i],
                      "space": space.space, "pixel_distance": float(per_image["pixel_distance"].iloc[i]),
                      "feature_distance": None if pd.isna(per_image["feature_distance"].iloc[i])
                      else float(per_image["feature_distance"].iloc[i]),
                      "memorised": bool(per_image["memorised"].iloc[i])})
    return pairs


