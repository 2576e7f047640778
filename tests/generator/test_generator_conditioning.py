"""Conditioning really works: generated images are recognised as their requested class.

A tiny generator is trained through the real stages (ingest, split, train_generator_stage,
synthesis_stage) on a two-class toy set whose classes differ clearly (a blob in the top or the
bottom half). A classifier trained on the real images then labels the synthetic ones. If the
generator ignored the label, half of them would be wrong; the unconditional samples
(guidance scale 0, label ignored by construction) show exactly that and keep the test honest.
"""

from __future__ import annotations

import hashlib

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression

from gen_helpers import tiny_config, write_toy_folder
from pipeline.generator.sampling import image_seed, load_pipeline, use_sampler
from pipeline.generator.stage import synthesis_stage, train_generator_stage
from pipeline.image_tensors import load_image_tensors
from pipeline.stages import ingest_stage, load_split, split_stage


def _pixels(paths: list[str], size: int = 16) -> np.ndarray:
    sha = [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths]  # the cache verifies content
    return load_image_tensors(paths, sha, "L", size, progress=False).flatten(1).float().numpy() / 255.0


def test_generated_images_are_recognised_as_their_requested_class(tmp_path: Path) -> None:
    data_dir = write_toy_folder(tmp_path / "toy", per_class=40)
    config = tiny_config(
        tmp_path,
        {"train_steps": 300, "batch_size": 16, "learning_rate": 2e-3, "warmup_steps": 20, "ema_decay": 0.99,
         "checkpoint_every": 100, "augment_flip": False, "augment_affine": False, "class_dropout": 0.1},
        data={"class_names": ["top", "bottom"], "min_side": 32},
        split={"train_fraction": 0.5, "cv_folds": 2},
        synthesis={"per_class": 16, "sampler": "dpmsolver++", "steps": 10, "guidance_scale": 3.0, "batch_size": 32},
    )
    ingest = ingest_stage(config, data_dir, progress=False)
    split = split_stage(config, ingest.manifest_path)
    generator = train_generator_stage(config, split.split_path, progress=False)
    assert not generator.cached and generator.summary["train_images"] == 40  # the 50% training side only
    synthetic = synthesis_stage(config, generator, progress=False)
    manifest = pd.read_parquet(synthetic.manifest_path)
    assert manifest["label"].value_counts().to_dict() == {"top": 16, "bottom": 16}

    # a classifier trained on the real images (both sides: it judges the generator, it is not evaluated)
    real = load_split(split.split_path).table
    clf = LogisticRegression(max_iter=2000).fit(_pixels(list(real["path"])), real["label"])
    assert clf.score(_pixels(list(real["path"])), real["label"]) == 1.0

    conditional = clf.score(_pixels(list(manifest["path"])), manifest["label"])
    assert conditional >= 0.9, f"generated images match their requested class only {conditional:.0%} of the time"

    # the same seeds with the label ignored (guidance 0 = the unconditional model) are near chance
    pipe = use_sampler(load_pipeline(generator.pipeline_path), "dpmsolver++", 10)
    labels = [c for c in (0, 1) for _ in range(16)]
    seeds = [torch.Generator().manual_seed(image_seed(config.seed, c, i)) for c in (0, 1) for i in range(16)]
    uncond = pipe(labels, 10, guidance_scale=0.0, generator=seeds, output_type="pt").images
    flat = uncond.flatten(1).numpy()
    predicted = clf.predict(flat)
    ignored = float(np.mean(predicted == np.array(["top" if c == 0 else "bottom" for c in labels])))
    assert ignored <= 0.75 and conditional - ignored >= 0.25

    # finished stages are reused, not redone
    again = train_generator_stage(config, split.split_path, progress=False)
    assert again.cached and again.pipeline_hash == generator.pipeline_hash
    assert synthesis_stage(config, again, progress=False).cached
