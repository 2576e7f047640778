"""The quality stage judges out of sample: the default reference path (a real k-fold reference, trained here in
seconds) embeds every real image only with the fold model that never trained on it, judges real-seeded images
by their seed's out-of-fold model, splits the real halves by patient and near-duplicate group, and reports no
KID spread where a class has only one subset."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import pipeline.image_tensors as image_tensors
import classifiers.reference as reference_module
from pipeline.quality.judge import FoldModels
from pipeline.config import load_domain_config
from pipeline.demo_data import DEMO_CLASSES, render_phantom
from pipeline.image_tensors import square_resize
from pipeline.imageio import read_image, save_png
from pipeline.quality.metrics import kernel_distance
from pipeline.quality.oof import image_groups, synthetic_folds
from pipeline.quality.stage import quality_stage, real_halves
from pipeline.stages import ingest_stage, load_split, split_stage
from pipeline.validate import sha256_file

SIZE = 32


def _row_key(row: torch.Tensor) -> str:
    return hashlib.sha256(row.detach().contiguous().numpy().tobytes()).hexdigest()


def test_default_reference_path_embeds_real_images_out_of_fold(phantom_dir: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_domain_config("demo", "cpu", {
        "runs_root": str(tmp_path / "runs"), "split": {"cv_folds": 2}, "generator": {"image_size": SIZE},
        "classifiers": {"architectures": ["resnet18"], "image_size": 32, "batch_size": 8, "max_steps": 3,
                        "min_steps": 1, "eval_every_steps": 3},
        "quality": {"kid_subsets": 5, "msssim_pairs": 10, "extractors": ["domain"]}})
    split_path = split_stage(config, ingest_stage(config, phantom_dir, progress=False).manifest_path).split_path
    train = load_split(split_path).train.sort_values(["label", "sha256"]).reset_index(drop=True)

    # synthetic set: fresh phantoms (no seed) and copies of training images filed as real-seeded from them
    rows, rng, out = [], np.random.default_rng(5), tmp_path / "synthetic"
    for label in DEMO_CLASSES:
        for i in range(4):
            pixels = np.round(render_phantom(label, SIZE, rng) * 255).astype(np.uint8)
            rows.append((save_png(pixels, out / label / f"fresh{i}.png"), label, None))
    for i in range(0, len(train), 3):
        seed = train.iloc[i]
        pixels = square_resize(read_image(seed["path"], "L").pixels, SIZE).copy()
        pixels[0, 0] = 255 - pixels[0, 0]  # a near-copy: its own content, so the hooks below tell it from its seed
        rows.append((save_png(pixels, out / seed["label"] / f"seeded{i}.png"), seed["label"], seed["sha256"]))
    manifest = pd.DataFrame({"path": [str(p) for p, _, _ in rows], "relpath": [Path(p).name for p, _, _ in rows],
                             "label": [lab for _, lab, _ in rows], "sha256": [sha256_file(p) for p, _, _ in rows],
                             "seed_sha256": [s for _, _, s in rows]})
    manifest_path = tmp_path / "synthetic.parquet"
    manifest.to_parquet(manifest_path)

    seen: dict[str, set[int]] = {}  # prepared input row -> the fold models that embedded or judged it
    loaded: list[FoldModels] = []
    original = reference_module.load_fold_models

    def recording_load(*args):
        ref = original(*args)
        for k, model in enumerate(ref.models):
            model.register_forward_pre_hook(
                lambda _m, args, k=k: [seen.setdefault(_row_key(r), set()).add(k) for r in args[0]] and None)
        loaded.append(ref)
        return ref

    monkeypatch.setattr(reference_module, "load_fold_models", recording_load)
    reference = reference_module.reference_stage(config, split_path)  # what flows/run.py passes: no stubs
    result = quality_stage(config, split_path, manifest_path, progress=False, reference=reference)
    assert loaded, "the stage did not load the reference classifier"
    ref = loaded[0]

    real = image_tensors.load_image_tensors(train["path"].tolist(), train["sha256"].tolist(), "L", SIZE)
    prepared = ref.prepare(real)
    folds = ref.fold_of(train["sha256"].tolist())
    assert None not in folds and set(folds) == {0, 1}
    for sha, fold, row in zip(train["sha256"], folds, prepared):
        # no fold model ever saw a real image it trained on: only its own out-of-fold model did
        assert seen.get(_row_key(row)) == {fold}, sha

    # by content hash: which fold embedded which image, written by the stage
    embedded = pd.read_parquet(result.directory / "embedding.parquet")
    real_rows = embedded[embedded["side"] == "real"].set_index("sha256")["fold"]
    assert real_rows.to_dict() == dict(zip(train["sha256"], folds))
    synth = embedded[embedded["side"] == "synthetic"].set_index("sha256")["fold"]
    seeded = manifest[manifest["seed_sha256"].notna()]
    assert [synth[s] for s in seeded["sha256"]] == ref.fold_of(seeded["seed_sha256"].tolist())
    assert synth.between(0, 1).all()  # unseeded images go to one fold model each, never the fold mean

    # a fold model's features of its own training images differ from its out-of-fold ones, and the stage's
    # in-sample alternative (the fold mean) is not what it used
    x = real[:1]
    own, other = folds[0], 1 - folds[0]
    assert not np.allclose(ref.fold_features(x, [own]), ref.fold_features(x, [other]), atol=1e-4)
    assert not np.allclose(ref.fold_features(x, [own]), ref.features(x), atol=1e-4)

    # label agreement of real-seeded images: the seed's out-of-fold model, not the fold mean
    per_image = pd.read_parquet(result.directory / "per_image.parquet").set_index("sha256")
    copies = image_tensors.load_image_tensors(seeded["path"].tolist(), seeded["sha256"].tolist(), "L", SIZE)
    oof = ref.fold_proba(copies)[np.asarray(ref.fold_of(seeded["seed_sha256"].tolist())), np.arange(len(copies))]
    np.testing.assert_allclose(per_image.loc[seeded["sha256"], "confidence"].to_numpy(), oof.max(1), rtol=1e-4)
    assert not np.allclose(oof.max(1), ref.predict_proba(copies).max(1), rtol=1e-4)

    # every side smaller than kid_subset_size (1000): one KID subset, so no spread is reported (was a std of 0)
    report = json.loads((result.directory / "quality.json").read_text())
    kid = [m for m in report["metrics"] if m["metric"] == "kid"]
    assert kid and all(m["synthetic_std"] is None and m["reference_std"] is None for m in kid)
    assert all(m["synthetic"] is not None for m in kid)


def test_real_halves_never_split_a_patient_or_a_near_duplicate_group() -> None:
    rng = np.random.default_rng(0)
    n = 80
    table = pd.DataFrame({"label": np.repeat(["a", "b"], n // 2), "sha256": [f"{i:04d}" for i in range(n)],
                          "patient_id": [f"p{i // 4}" for i in range(n)],  # 4 images per patient
                          "dup_group": [None] * n})
    table.loc[[1, 9], "dup_group"] = "g0"  # a near-duplicate across patients p0 and p2 links them
    table.loc[[42, 77], "dup_group"] = "g1"
    table = table.sample(frac=1.0, random_state=1).reset_index(drop=True)
    for seed in range(5):
        in_a = real_halves(table, seed)
        assert 0.3 < in_a.mean() < 0.7
        for column in ("patient_id", "dup_group"):
            sides = pd.Series(in_a).groupby(table[column].to_numpy()).nunique()
            assert (sides == 1).all(), f"{column} on both halves (seed {seed})"
        p0 = in_a[table["patient_id"].isin(["p0", "p2"]).to_numpy()]
        assert len(set(p0)) == 1  # linked through g0
        for label in ("a", "b"):
            assert 0 < in_a[(table["label"] == label).to_numpy()].sum() < (table["label"] == label).sum()
    assert rng is not None


def test_image_groups_link_patients_and_near_duplicates_transitively() -> None:
    table = pd.DataFrame({"patient_id": ["p1", "p1", "p2", None, None],
                          "dup_group": [None, "g", "g", "h", None]})
    groups = image_groups(table)
    assert groups[0] == groups[1] == groups[2] and len({groups[3], groups[4], groups[0]}) == 3


def test_synthetic_folds_follow_seeds_and_the_real_proportions() -> None:
    real_labels = np.array(["a"] * 6 + ["b"] * 4)
    real_folds = np.array([0, 0, 0, 0, 1, 1, 0, 1, 0, 1])  # class a: 2/3 fold 0; class b: half and half
    labels = np.array(["a"] * 9 + ["b"] * 4)
    seeds = [None] * 8 + [1] + [None] * 4
    out = synthetic_folds(labels, seeds, real_labels, real_folds, 2)
    assert out[8] == 1
    assert list(np.bincount(out[:8], minlength=2)) == [5, 3] or list(np.bincount(out[:8], minlength=2)) == [6, 2]
    assert list(np.bincount(out[9:], minlength=2)) == [2, 2]


def test_kid_has_no_spread_when_one_subset_is_all_there_is() -> None:
    a, b = np.random.default_rng(0).normal(size=(2, 6, 4))
    tiny = kernel_distance(a, b, subsets=20, subset_size=100)
    assert tiny.std is None and tiny.subsets == 1
    big = kernel_distance(np.random.default_rng(1).normal(size=(60, 4)), b, subsets=20, subset_size=100)
    assert big.std is not None and big.std > 0  # subsets of the larger side differ: a real spread
