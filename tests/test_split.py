"""The 20/80 split: exact per-class fractions, determinism, group awareness, leakage detection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import SplitConfig, load_domain_config
from pipeline.errors import DataError, LeakageError
from pipeline.split import TEST, TRAIN, make_split, verify_split
from pipeline.stages import ingest_stage, load_split, split_stage


def fake_manifest(per_class: dict[str, int], patients: int | None = None, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for label, n in per_class.items():
        for i in range(n):
            digest = "".join(rng.choice(list("0123456789abcdef"), 64))
            rows.append({"path": f"/d/{label}/{i}.png", "relpath": f"{label}/{i}.png", "label": label,
                         "patient_id": None if patients is None else f"p{rng.integers(patients)}",
                         "sha256": digest, "width": 64, "height": 64, "source_mode": "L", "bytes": 1})
    return pd.DataFrame(rows)


def test_per_class_twenty_percent_matches_the_study_sizes() -> None:
    manifest = fake_manifest({"glioma": 1621, "meningioma": 1645, "notumor": 2000, "pituitary": 1757})
    split = make_split(manifest, SplitConfig(), seed=1)
    counts = split.counts()
    assert {k: v[TRAIN] for k, v in counts.items()} == {"glioma": 324, "meningioma": 329, "notumor": 400,
                                                         "pituitary": 351}
    assert all(v[TRAIN] + v[TEST] == n for (k, v), n in zip(sorted(counts.items()), [1621, 1645, 2000, 1757]))


def test_split_is_deterministic_and_independent_of_row_order() -> None:
    manifest = fake_manifest({"a": 50, "b": 40})
    one = make_split(manifest, SplitConfig(), seed=3)
    two = make_split(manifest.sample(frac=1.0, random_state=9), SplitConfig(), seed=3)
    other_seed = make_split(manifest, SplitConfig(), seed=4)
    assert one.split_hash == two.split_hash
    assert one.split_hash != other_seed.split_hash
    assert set(one.train["sha256"]) == set(two.train["sha256"])


def test_group_aware_split_keeps_each_patient_on_one_side() -> None:
    manifest = fake_manifest({"a": 200, "b": 150}, patients=60)
    split = make_split(manifest, SplitConfig(), seed=0)
    assert split.grouped
    assert set(split.train["patient_id"]).isdisjoint(split.test["patient_id"])
    fraction = len(split.train) / len(manifest)
    assert 0.1 < fraction < 0.3


def test_too_few_patients_is_a_clear_error() -> None:
    with pytest.raises(DataError, match="only 3 patients"):
        make_split(fake_manifest({"a": 30, "b": 30}, patients=3), SplitConfig(), seed=0)


@pytest.mark.parametrize("column, message", [("path", "file"), ("sha256", "image content"),
                                             ("patient_id", "patient")])
def test_verify_split_catches_every_kind_of_leak(column: str, message: str) -> None:
    split = make_split(fake_manifest({"a": 30, "b": 30}, patients=20 if column == "patient_id" else None),
                       SplitConfig(), seed=0)
    table = split.table.copy()
    verify_split(table)
    train_index = table.index[table["split"] == TRAIN][0]
    test_index = table.index[table["split"] == TEST][0]
    table.loc[test_index, column] = table.loc[train_index, column]
    with pytest.raises(LeakageError, match=message):
        verify_split(table)


def test_split_stage_persists_reuses_and_verifies(phantom_dir: Path, tmp_path: Path) -> None:
    config = load_domain_config("demo", overrides={"runs_root": str(tmp_path / "runs")})
    ingest = ingest_stage(config, phantom_dir, progress=False)
    first = split_stage(config, ingest.manifest_path)
    again = split_stage(config, ingest.manifest_path)
    assert not first.cached and again.cached and again.split_hash == first.split_hash
    loaded = load_split(first.split_path)
    assert loaded.counts() == {c: {TRAIN: 6, TEST: 24} for c in ("elongated", "normal", "ring", "round")}
    assert (first.directory / "split.json").is_file() and (first.directory / "split.csv").is_file()
    # a tampered split on disk is refused before anyone trains on it
    table = pd.read_parquet(first.split_path)
    table.loc[table["split"] == TEST, "sha256"] = table.loc[table["split"] == TRAIN, "sha256"].iloc[0]
    table.to_parquet(first.split_path, index=False)
    with pytest.raises(LeakageError):
        load_split(first.split_path)


def test_development_share_is_stratified_group_aware_and_leaves_the_training_sample_alone() -> None:
    from pipeline.split import DEV

    manifest = fake_manifest({"a": 200, "b": 120}, patients=90, seed=4)
    plain = make_split(manifest, SplitConfig(), seed=2)
    with_dev = make_split(manifest, SplitConfig(dev_fraction=0.5), seed=2)
    assert with_dev.training_hash == plain.training_hash  # the generator's data does not depend on it
    assert set(with_dev.train["sha256"]) == set(plain.train["sha256"])
    held = with_dev.table[with_dev.table["split"] != TRAIN]
    for label, rows in held.groupby("label"):
        share = (rows["split"] == DEV).mean()
        assert 0.35 < share < 0.65, (label, share)  # stratified: about half of every class
    dev_patients, test_patients = set(with_dev.dev["patient_id"]), set(with_dev.test["patient_id"])
    assert not dev_patients & test_patients  # no patient on both sides of the dev/test line
    assert with_dev.summary()["dev"] == len(with_dev.dev) > 0
    assert with_dev.split_hash != plain.split_hash


def test_training_hash_ignores_held_out_labels_and_pixels_but_not_training_ones() -> None:
    from pipeline.split import training_hash

    split = make_split(fake_manifest({"a": 60, "b": 60}), SplitConfig(), seed=1)
    table = split.table.copy()
    held = table["split"] == TEST
    table.loc[held, "label"] = table.loc[held, "label"].map({"a": "b", "b": "a"})
    table.loc[held, "sha256"] = "f" * 64
    assert training_hash(table) == split.training_hash
    table.loc[table.index[~held][0], "label"] = "b" if table.loc[table.index[~held][0], "label"] == "a" else "a"
    assert training_hash(table) != split.training_hash


def test_a_patient_in_both_dev_and_test_is_a_leak() -> None:
    split = make_split(fake_manifest({"a": 60, "b": 60}, patients=40), SplitConfig(dev_fraction=0.5), seed=1)
    table = split.table.copy()
    dev_row = table.index[table["split"] == "dev"][0]
    test_patient = table.loc[table["split"] == TEST, "patient_id"].iloc[0]
    table.loc[dev_row, "patient_id"] = test_patient
    with pytest.raises(LeakageError, match="patient.*in both dev and test"):
        verify_split(table)


def test_dev_fraction_too_large_for_a_class_is_a_clear_error() -> None:
    with pytest.raises(DataError, match="dev_fraction"):
        make_split(fake_manifest({"a": 200, "b": 3}), SplitConfig(cv_folds=2, dev_fraction=0.05), seed=0)
