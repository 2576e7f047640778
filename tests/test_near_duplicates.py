"""Near-duplicate grouping at ingest and group-aware splitting (pipeline.near_duplicates)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.config import load_domain_config
from pipeline.near_duplicates import (HASH_BITS, assign_groups, crossing_groups, hamming_matrix, hash_words,
                                              near_duplicate_groups, perceptual_hash)
from pipeline.split import TEST, TRAIN, make_split, verify_split
from pipeline.stages import ingest_stage, split_stage, load_split
from pipeline.config import SplitConfig


def _reencode(path: Path, scale: float, quality: int) -> bytes:
    image = Image.open(path).convert("L")
    image = image.resize((int(image.width * scale), int(image.height * scale)), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def test_hamming_distance_of_hex_hashes() -> None:
    a = "0" * 64
    b = "f" + "0" * 62 + "1"  # 4 + 1 bits set
    words = hash_words([a, b])
    assert words.shape == (2, HASH_BITS // 64)
    assert hamming_matrix(words, words).tolist() == [[0, 5], [5, 0]]


def test_groups_are_transitive_and_singletons_are_unassigned() -> None:
    base = "0" * 64
    one = "1" + "0" * 63  # 1 bit from base
    two = "3" + "0" * 63  # 1 bit from one, 2 from base
    far = "f" * 64
    assert near_duplicate_groups([base, far, two, one], max_bits=1).tolist() == [0, -1, 0, 0]
    assert near_duplicate_groups([base, far, two, one], max_bits=-1).tolist() == [-1, -1, -1, -1]


def test_rescaled_reencoded_copy_is_grouped_at_ingest_and_split_with_its_original(phantom_dir: Path,
                                                                                   tmp_path: Path) -> None:
    originals = sorted((phantom_dir / "round").glob("*.png"))[:6]
    assert len(originals) == 6
    for k, original in enumerate(originals):  # rescaled x1.5 / x0.75 and re-encoded: different bytes, same picture
        (phantom_dir / "round" / f"copy_{k}.jpg").write_bytes(_reencode(original, 1.5 if k % 2 else 0.75, 70))
    config = load_domain_config("demo", overrides={"runs_root": str(tmp_path / "runs"), "data": {"min_side": 32}})
    ingest = ingest_stage(config, phantom_dir, progress=False)
    manifest = pd.read_parquet(ingest.manifest_path)
    assert ingest.summary["near_duplicate_groups"] >= len(originals)
    by_name = manifest.set_index("relpath")["dup_group"]
    for k, original in enumerate(originals):
        group = by_name[f"round/{original.name}"]
        assert group is not None and group == by_name[f"round/copy_{k}.jpg"]
    assert any("near-duplicates" in note for note in ingest.notes), ingest.notes
    assert (ingest.directory / "near_duplicates.csv").is_file()

    for seed in range(4):  # whatever the draw, a group never straddles the split
        config.seed = seed
        split = load_split(split_stage(config, ingest.manifest_path).split_path)
        assert crossing_groups(split.table).empty
        for k, original in enumerate(originals):
            sides = split.table.set_index("relpath")["split"]
            assert sides[f"round/{original.name}"] == sides[f"round/copy_{k}.jpg"]


def test_verify_split_rejects_a_group_on_both_sides() -> None:
    table = pd.DataFrame({"path": ["a", "b", "c"], "sha256": ["1", "2", "3"], "patient_id": [None] * 3,
                          "dup_group": ["nd-x", "nd-x", None], "split": [TRAIN, TEST, TEST]})
    try:
        verify_split(table)
    except Exception as exc:  # LeakageError
        assert "near-duplicate group" in str(exc)
    else:
        raise AssertionError("a near-duplicate group on both sides must be rejected")


def test_split_without_groups_is_unchanged_and_groups_keep_fractions() -> None:
    rng = np.random.default_rng(0)
    rows = [{"path": f"/d/{lab}/{i}", "relpath": f"{lab}/{i}", "label": lab, "patient_id": None,
             "sha256": f"{rng.integers(1 << 62):016x}{i:04d}", "width": 8, "height": 8, "source_mode": "L",
             "bytes": 1} for lab in ("a", "b") for i in range(100)]
    plain = pd.DataFrame(rows)
    with_column = plain.assign(dup_group=np.nan)  # as read back from a table: NaN, not None
    assert make_split(plain, SplitConfig(), 1).split_hash == make_split(with_column, SplitConfig(), 1).split_hash
    grouped = with_column.astype({"dup_group": object})
    grouped.loc[:9, "dup_group"] = "nd-a"  # 10 copies in class a
    grouped.loc[100:102, "dup_group"] = "nd-b"
    split = make_split(grouped, SplitConfig(), 1)
    assert crossing_groups(split.table).empty
    counts = split.counts()
    assert 10 <= counts["a"][TRAIN] <= 30 and counts["b"][TRAIN] == 20


def test_perceptual_hash_grayscale_and_rgb_of_one_picture_agree() -> None:
    gray = (np.add.outer(np.arange(64), np.arange(64)) % 256).astype(np.uint8)
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    assert perceptual_hash(gray) == perceptual_hash(rgb)
    assert len(perceptual_hash(gray)) == HASH_BITS // 4
    table = pd.DataFrame({"sha256": ["b", "a"], "phash": [perceptual_hash(gray), perceptual_hash(rgb)]})
    assert assign_groups(table, 12)["dup_group"].tolist() == ["nd-a", "nd-a"]
