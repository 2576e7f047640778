"""Selection without peeking: a content-hash proof that the whole selection path (reference fits,
candidate scoring, real-seeded synthesis) never reads a held-out image."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

import pipeline.image_tensors as image_tensors
from pipeline.config import load_domain_config
from classifiers.reference import reference_stage
from pipeline.errors import ConfigError
from pipeline.generator.stage import synthesis_stage, train_generator_stage
from pipeline.stages import ingest_stage, load_split, split_stage


def _tiny(tmp_path: Path, **synthesis) -> object:
    return load_domain_config("demo", "cpu", {
        "runs_root": str(tmp_path / "runs"),
        "generator": {"image_size": 16, "block_out_channels": [32, 64], "attention_levels": [False, False],
                      "train_steps": 4, "checkpoint_every": 2, "batch_size": 8, "num_train_timesteps": 100},
        "synthesis": {"per_class": 2, "steps": 3, "select_per_class": 2, "guidance_candidates": [1.0, 2.0],
                      "strength_candidates": [0.5], "checkpoint_candidates": 2, **synthesis},
        "split": {"cv_folds": 2},
        "classifiers": {"architectures": ["resnet18"], "image_size": 32, "batch_size": 8, "max_steps": 3,
                        "min_steps": 1, "eval_every_steps": 3}})  # the reference: the real arm's fold fits


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
    reference = reference_stage(config, split.split_path)  # recorded too: the reference trains on the sample only
    synthesis = synthesis_stage(config, generator, progress=False, reference=reference)
    assert read, "the recorder saw no image reads: the test would prove nothing"
    assert not set(read) & held_out, "the selection path read a held-out image"
    selection = synthesis.summary["selection"]
    assert len(selection["candidates"]) == 2 * 2 + 1  # 2 checkpoints x 2 guidance + 1 strength
    assert {c["checkpoint_step"] for c in selection["candidates"]} == {2, 4}
    assert synthesis.summary["guidance_scale"] == selection["guidance_scale"]
    manifest = pd.read_parquet(synthesis.manifest_path)
    assert manifest["seed_sha256"].notna().all() and not set(manifest["seed_sha256"]) & held_out


def test_selection_writes_its_plan_once_and_the_synthesis_key_follows_it(phantom_dir: Path, tmp_path: Path) -> None:
    """The decision is a plan file listing every candidate; the exported pipeline carries the chosen defaults;
    the flow's key (computed without running) is the stage's key and changes with the plan."""
    from pipeline.generator.pipeline import ClassConditionalPipeline
    from pipeline.generator.stage import planned_synthesis_key

    config = _tiny(tmp_path, select=True, mode="real-seeded", strength_candidates=[0.5, 0.7])
    split = split_stage(config, ingest_stage(config, phantom_dir, progress=False).manifest_path)
    generator = train_generator_stage(config, split.split_path, progress=False)
    reference = reference_stage(config, split.split_path)
    assert planned_synthesis_key(config, generator, reference) != planned_synthesis_key(config.model_copy(update={
        "synthesis": config.synthesis.model_copy(update={"select": False})}), generator)  # pending: no plan yet
    with pytest.raises(ConfigError, match="synthesis.select needs the reference classifier"):
        synthesis_stage(config, generator, progress=False)  # selection without a judge: one clear line
    first = synthesis_stage(config, generator, progress=False, reference=reference)
    plan_file = Path(first.summary["selection_plan"])
    plan = json.loads(plan_file.read_text())
    assert len(plan["candidates"]) == 2 * 2 + 2
    for c in plan["candidates"]:
        assert {"score", "se", "cas", "gap", "novelty", "margin", "tied", "images"} <= set(c)
        assert c["score"] == pytest.approx(c["cas"] - c["gap"] + plan["diversity_weight"] * c["novelty"], abs=2e-5)
    assert plan["images_per_class"] == 2 and plan["images_per_candidate"] == 2 * plan["classes"]
    assert plan["images_per_class_needed"] > 2 and str(plan["images_per_class_needed"]) in plan["warnings"][0]
    assert (plan["guidance_scale"], plan["strength"]) == (first.summary["guidance_scale"], first.summary["strength"])
    exported = ClassConditionalPipeline.from_pretrained(plan_file.parent / plan["pipeline"])
    assert exported.config.guidance_scale == plan["guidance_scale"] and exported.config.strength == plan["strength"]
    assert planned_synthesis_key(config, generator, reference) == first.key  # the flow's cache key is the stage's key

    written = plan_file.stat().st_mtime_ns
    again = synthesis_stage(config, generator, progress=False, reference=reference)
    assert again.cached and again.key == first.key and plan_file.stat().st_mtime_ns == written  # decided once

    other = next(c for c in plan["candidates"] if c["strength"] is None and c["guidance_scale"] != plan["guidance_scale"])
    plan_file.write_text(json.dumps({**plan, "guidance_scale": other["guidance_scale"]}))
    assert planned_synthesis_key(config, generator, reference) != first.key  # another decision: another synthetic set
