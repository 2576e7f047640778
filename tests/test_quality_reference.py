"""The selection signals and the reference classifier: intensity statistics, and a k-fold classifier
trained on the real 20% sample only with a small API (predict_proba, out-of-fold, features, CAS)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import load_domain_config
from pipeline.quality.reference import classification_accuracy_score, load_reference, reference_stage
from pipeline.quality.signals import class_statistics, image_statistics, intensity_gap
from pipeline.stages import ingest_stage, load_split, split_stage


def test_signals_measure_mean_contrast_and_background() -> None:
    dark = torch.zeros(2, 1, 32, 32, dtype=torch.uint8)
    dark[:, :, 8:24, 8:24] = 255
    grey = torch.full((2, 1, 32, 32), 128, dtype=torch.uint8)
    stats = image_statistics(torch.cat([dark, grey]))
    assert stats["background"].tolist()[:2] == [0.0, 0.0]
    assert stats["mean"][0] == pytest.approx(0.25) and stats["std"][2] == 0.0
    real = class_statistics(dark, [0, 0], ["a"])
    synthetic = class_statistics(grey, [0, 0], ["a"])
    gap = intensity_gap(synthetic, real)
    assert gap["per_class"]["a"]["background"] == pytest.approx(128 / 255)
    assert gap["gap"] > 0.2 and intensity_gap(real, real)["gap"] == 0.0


def test_reference_classifier_api(phantom_dir: Path, tmp_path: Path) -> None:
    config = load_domain_config("demo", "cpu", {
        "runs_root": str(tmp_path / "runs"), "split": {"cv_folds": 2}, "synthesis": {"reference_steps": 3},
        "classifiers": {"architectures": ["resnet18"], "image_size": 32, "batch_size": 8}})
    split = split_stage(config, ingest_stage(config, phantom_dir, progress=False).manifest_path)
    out = reference_stage(config, split.split_path)
    assert reference_stage(config, split.split_path).cached
    ref = load_reference(out.directory)
    train = load_split(split.split_path).train
    assert sorted(sha for fold in ref.val_sha256s for sha in fold) == sorted(train["sha256"])  # each image once
    images = torch.randint(0, 256, (5, 1, 48, 48), dtype=torch.uint8)  # any size: resized to the reference's
    probs = ref.predict_proba(images)
    assert probs.shape == (5, len(ref.class_names)) and np.allclose(probs.sum(1), 1, atol=1e-5)
    features = ref.features(images)
    assert features.shape[0] == 5 and features.ndim == 2
    oof = ref.out_of_fold_proba(images[:2], [ref.val_sha256s[0][0], None])
    np.testing.assert_allclose(oof[0], ref.fold_proba(images[:1])[0, 0], atol=1e-6)  # the fold that never saw it
    score = classification_accuracy_score(ref, images, [0, 1, 2, 3, 0])
    assert np.asarray(score["confusion"]).sum() == 5 and 0 <= score["cas"] <= 1
