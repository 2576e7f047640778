"""Real-seeded (SDEdit) synthesis: each image starts from a real training image of its own class."""

from __future__ import annotations

from pathlib import Path

import torch

from gen_helpers import TINY_GENERATOR
from oracle import class_masks, oracle_generator
from pipeline.config import GeneratorConfig, SynthesisConfig
from pipeline.generator.data import to_model_range
from pipeline.generator.model import build_unet
from pipeline.generator.pipeline import ClassConditionalPipeline
from pipeline.generator.sampling import make_sampler
from pipeline.generator.synthesis import RealSample, render, synthesize


def _real(size: int = 16) -> RealSample:
    """Three images per class of the oracle's distribution: black background (levels 0, 10, 20), a square."""
    masks = class_masks(size)
    images = torch.stack([torch.where(masks[c], 191, level).to(torch.uint8)[None]
                          for c in (0, 1) for level in (0, 10, 20)])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    return RealSample(images, labels, [f"{i:064x}" for i in range(6)])


def test_real_seeded_manifest_records_seed_and_distances(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_unet(GeneratorConfig(**TINY_GENERATOR), 1, num_classes=2).eval()
    noise = {"num_train_timesteps": 100, "beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction"}
    gen = ClassConditionalPipeline(model, make_sampler("ddim", noise, 5), class_names=["top", "bottom"], mode="L")
    config = SynthesisConfig(per_class=4, steps=5, mode="real-seeded", strength=0.4, batch_size=8)
    real = _real()
    manifest = synthesize(gen, tmp_path, config, seed=3, generator_hash="h", progress=False, real=real)
    assert (manifest["synthesis_mode"] == "real-seeded").all() and (manifest["strength"] == 0.4).all()
    row_of = {sha: k for k, sha in enumerate(real.sha256s)}
    for row in manifest.itertuples():  # the seed is a real image of the same class, cycling through the class
        assert int(real.labels[row_of[row.seed_sha256]]) == row.class_index
    assert manifest.groupby("label")["seed_sha256"].nunique().to_dict() == {"top": 3, "bottom": 3}
    assert manifest["seed_distance"].notna().all() and (manifest["nn_distance"] <= manifest["seed_distance"] + 1e-9).all()


def test_strength_sets_how_far_an_image_moves_from_its_seed() -> None:
    gen = oracle_generator("v_prediction", -1.0, 0.5, error=0.0)
    real = _real()
    seed_rows = [0, 3]  # class 0's first template, class 1's first
    init = to_model_range(real.images[seed_rows])
    distances = []
    for strength in (0.1, 0.5, 0.95):
        out = render(gen, [0, 1], [5, 6], SynthesisConfig(), init=init, strength=strength).float() / 127.5 - 1
        distances.append(float((out - init).abs().mean()))
    assert distances[0] < 0.02  # barely noised: the seed comes back
    assert distances[0] <= max(distances[1:])
