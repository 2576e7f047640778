"""The selection signals and the reference classifier: intensity statistics, and the real arm's k fold fits
(trained on the real 20% sample only) with a small API (predict_proba, out-of-fold, features, CAS)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import load_domain_config
from classifiers.predict import load_fit
from classifiers.reference import reference_key, reference_stage
from classifiers.stage import classifiers_stage
from pipeline.quality.judge import classification_accuracy_score
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


def test_the_reference_is_the_real_arm_and_the_classifiers_stage_reuses_its_fits(phantom_dir: Path,
                                                                                 tmp_path: Path) -> None:
    """One training loop: the reference stage trains the real arm's fold fits of the reference architecture;
    the classifiers stage then finds them complete under the same keys (and the judge reads them)."""
    config = load_domain_config("demo", "cpu", {
        "runs_root": str(tmp_path / "runs"), "split": {"cv_folds": 2},
        "classifiers": {"architectures": ["resnet18"], "image_size": 32, "batch_size": 8, "arms": ["real"],
                        "max_steps": 4, "min_steps": 2, "eval_every_steps": 2}})
    split = split_stage(config, ingest_stage(config, phantom_dir, progress=False).manifest_path)
    out = reference_stage(config, split.split_path)
    assert out.key == reference_key(config, load_split(split.split_path))  # the flow's cache key, without training
    assert reference_stage(config, split.split_path).cached
    classifiers = classifiers_stage(config, split.split_path, None, progress=False)
    assert classifiers.summary["fits_reused"] == 2  # the real arm's two folds: trained once, by the reference stage
    table = classifiers.results_path.parent / "results.parquet"
    import pandas as pd

    real_fits = pd.read_parquet(table).query("arm == 'real' and fold != 'ensemble'")["fit_key"].tolist()
    assert sorted(real_fits) == sorted(out.fit_keys)

    ref = out.load()
    train = load_split(split.split_path).train
    assert sorted(sha for fold in ref.val_sha256s for sha in fold) == sorted(train["sha256"])  # each image once
    assert ref.cv_accuracy == pytest.approx(np.mean([f["val_accuracy"] for f in out.summary["folds"]]))
    images = torch.randint(0, 256, (5, 1, 48, 48), dtype=torch.uint8)  # any size: resized to the reference's
    probs = ref.predict_proba(images)
    assert probs.shape == (5, len(ref.class_names)) and np.allclose(probs.sum(1), 1, atol=1e-5)
    # the judge scores exactly as the classifiers stage's stored fit does (same weights, same normalisation)
    fitted = load_fit(config.runs_root, config.name, out.fit_keys[1], device=torch.device("cpu"))
    resized = torch.nn.functional.interpolate(images.float(), size=(32, 32), mode="bilinear", antialias=True,
                                              align_corners=False)
    np.testing.assert_allclose(ref.fold_proba(images)[1], fitted.predict_uint8(resized), atol=1e-4)
    features = ref.features(images)
    assert features.shape[0] == 5 and features.ndim == 2
    oof = ref.out_of_fold_proba(images[:2], [ref.val_sha256s[0][0], None])
    np.testing.assert_allclose(oof[0], ref.fold_proba(images[:1])[0, 0], atol=1e-6)  # the fold that never saw it
    score = classification_accuracy_score(ref, images, [0, 1, 2, 3, 0])
    assert np.asarray(score["confusion"]).sum() == 5 and 0 <= score["cas"] <= 1


def test_the_reference_key_follows_the_real_arms_settings_only(phantom_dir: Path, tmp_path: Path) -> None:
    base = {"runs_root": str(tmp_path / "runs"), "split": {"cv_folds": 2},
            "classifiers": {"architectures": ["resnet18", "mobilenetv2_100"], "image_size": 32}}
    config = load_domain_config("demo", "cpu", base)
    split = load_split(split_stage(config, ingest_stage(config, phantom_dir, progress=False).manifest_path).split_path)
    key = reference_key(config, split)

    def changed(**classifiers: object) -> str:
        return reference_key(load_domain_config("demo", "cpu", {**base, "classifiers": {**base["classifiers"],
                                                                                          **classifiers}}), split)

    assert changed(arms=["real"]) == key  # which arms the panel trains: not the reference's business
    assert changed(learning_rate=1e-4) != key  # a real-arm setting: other fits, another reference
    assert changed(primary_architecture="mobilenetv2_100") != key  # the declared primary architecture judges
