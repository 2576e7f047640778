"""Selection without peeking: a content-hash proof that the whole selection path (reference fits,
candidate scoring, real-seeded synthesis) never reads a held-out image."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

import pipeline.image_tensors as image_tensors
from pipeline.config import load_domain_config
from pipeline.generator.stage import synthesis_stage, train_generator_stage
from pipeline.stages import ingest_stage, load_split, split_stage


def _tiny(tmp_path: Path, **synthesis) -> object:
    return load_domain_config("demo", "cpu", {
        "runs_root": str(tmp_path / "runs"),
        "generator": {"image_size": 16, "block_out_channels": [32, 64], "attention_levels": [False, False],
                      "train_steps": 4, "checkpoint_every": 2, "batch_size": 8, "num_train_timesteps": 100},
        "synthesis": {"per_class": 2, "steps": 3, "select_per_class": 2, "guidance_candidates": [1.0, 2.0],
                      "strength_candidates": [0.5], "checkpoint_candidates": 2, "reference_steps": 3, **synthesis},
        "split": {"cv_folds": 2},
        "classifiers": {"architectures": ["resnet18"], "image_size": 32, "batch_size": 8}})


def test_selection_never_reads_a_held_out_image(phantom_dir: Path, tmp_path: Path, monkeypatch) -> None:
    config = _tiny(tmp_path, select=True, mode="real-seeded")
    split = split_stage(config, ingest_stage(config, phantom_dir, progress=False).manifest_path)
    held_out = set(load_split(split.split_path).test["sha256"])
    assert held_out
    read: list[str] = []
    real_read = image_tensors.read_image

    def recording_read(path, mode, *args, **kwargs):
        read.append(hashlib.sha256(Path(path).read_bytes()).hexdigest())
        return real_read(path, mode, *args, **kwargs)

    monkeypatch.setattr(image_tensors, "read_image", recording_read)
    generator = train_generator_stage(config, split.split_path, progress=False)
    synthesis = synthesis_stage(config, generator, progress=False)
    assert read, "the recorder saw no image reads: the test would prove nothing"
    assert not set(read) & held_out, "the selection path read a held-out image"
    selection = synthesis.summary["selection"]
    assert len(selection["candidates"]) == 2 * 2 + 1  # 2 checkpoints x 2 guidance + 1 strength
    assert {c["checkpoint_step"] for c in selection["candidates"]} == {2, 4}
    assert synthesis.summary["guidance_scale"] == selection["guidance_scale"]
    manifest = pd.read_parquet(synthesis.manifest_path)
    assert manifest["seed_sha256"].notna().all() and not set(manifest["seed_sha256"]) & held_out


def test_a_selection_that_lands_on_a_cached_set_still_reports_its_choice(phantom_dir: Path, tmp_path: Path) -> None:
    """One candidate of each kind: selection must choose the plain run's settings and reuse its set."""
    one = {"guidance_scale": 1.0, "guidance_candidates": [1.0], "checkpoint_candidates": 1, "mode": "real-seeded",
           "strength": 0.5, "strength_candidates": [0.5]}
    plain = _tiny(tmp_path, select=False, **one)
    split = split_stage(plain, ingest_stage(plain, phantom_dir, progress=False).manifest_path)
    generator = train_generator_stage(plain, split.split_path, progress=False)
    first = synthesis_stage(plain, generator, progress=False)
    assert first.summary["selection"] is None and not first.cached
    selected = synthesis_stage(_tiny(tmp_path, select=True, **one), generator, progress=False)
    assert selected.cached and selected.key == first.key
    choice = selected.summary["selection"]
    assert choice is not None and (choice["guidance_scale"], choice["strength"]) == (1.0, 0.5)
    assert len(choice["candidates"]) == 2
