"""Slow generator checks: it learns a black background with the shipped settings; the gpu profile builds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import deep_merge, load_domain_config
from pipeline.generator.data import TrainingData
from pipeline.generator.sampling import load_pipeline
from pipeline.generator.synthesis import render
from pipeline.generator.train import train_generator
from pipeline.quality.signals import class_statistics

LEARN_STEPS = 400  # fixed: the test measures the shipped settings, not a tuned schedule
MEAN_TOLERANCE = 0.05  # per-class mean intensity, pixels in [0, 1]
BACKGROUND_TOLERANCE = 0.03  # per-class border level (the real one is exactly 0)


def black_background_set(per_class: int = 48, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes on an exactly black background: a bright disc (0) or a dimmer square (1), jittered."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    images, labels = [], []
    for label in (0, 1):
        for _ in range(per_class):
            cy, cx = rng.uniform(size * 0.35, size * 0.65, 2)
            r = rng.uniform(size * 0.18, size * 0.25)
            if label == 0:
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
                img = np.where(mask, rng.uniform(200, 240), 0)
            else:
                mask = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
                img = np.where(mask, rng.uniform(110, 150), 0)
            images.append(np.round(img).astype(np.uint8))
            labels.append(label)
    return torch.from_numpy(np.stack(images))[:, None], torch.tensor(labels)


@pytest.mark.slow
def test_shipped_settings_learn_brightness_and_black_background(tmp_path: Path) -> None:
    images, labels = black_background_set()
    shipped = load_domain_config("demo", "cpu").generator
    config = load_domain_config("demo", "cpu", {
        "runs_root": str(tmp_path / "runs"),
        "generator": {"image_size": 32, "train_steps": LEARN_STEPS, "checkpoint_every": LEARN_STEPS,
                      "augment_affine": False}})
    assert config.generator.prediction_type == shipped.prediction_type and config.generator.snr_gamma == shipped.snr_gamma
    data = TrainingData(images, labels, ["disc", "square"], [f"{i:064x}" for i in range(len(labels))], "black")
    result = train_generator(config, data, tmp_path / "gen", "split", progress=False)
    n = 24
    out = render(load_pipeline(result.model_path), [0] * n + [1] * n, list(range(2 * n)), config.synthesis)
    real = class_statistics(images, labels, data.class_names)
    synthetic = class_statistics(out, torch.tensor([0] * n + [1] * n), data.class_names)
    for name in data.class_names:
        assert abs(synthetic.loc[name, "mean"] - real.loc[name, "mean"]) <= MEAN_TOLERANCE, (name, synthetic, real)
        assert abs(synthetic.loc[name, "background"] - real.loc[name, "background"]) <= BACKGROUND_TOLERANCE, (
            name, synthetic, real)


@pytest.mark.slow
def test_gpu_profile_generator_builds_trains_one_step_and_samples_on_cpu(tmp_path: Path) -> None:
    gpu = load_domain_config("demo", "gpu")
    config = load_domain_config("demo", "gpu", deep_merge({"runs_root": str(tmp_path / "runs")}, {
        "generator": {"train_steps": 1, "batch_size": 2, "mixed_precision": "no", "checkpoint_every": 1}}))
    assert config.generator.block_out_channels == gpu.generator.block_out_channels  # the profile's shapes
    size = config.generator.image_size
    images = torch.randint(0, 256, (4, 1, size, size), dtype=torch.uint8)
    data = TrainingData(images, torch.tensor([0, 1, 2, 3]), ["a", "b", "c", "d"], [f"{i:064x}" for i in range(4)], "g")
    result = train_generator(config, data, tmp_path / "gen", "split", progress=False)
    assert result.steps == 1 and np.isfinite(result.losses[0][1])
    two_steps = config.synthesis.model_copy(update={"steps": 2})
    out = render(load_pipeline(result.model_path), [0, 3], [1, 2], two_steps)
    assert out.shape == (2, 1, size, size) and out.dtype == torch.uint8
