"""Tiny configs and toy data for the generator tests (seconds, not minutes, on 2 CPU cores)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.config import DomainConfig, deep_merge, load_domain_config
from pipeline.generator.data import TrainingData
from pipeline.imageio import save_png

TINY_GENERATOR: dict[str, Any] = {
    "image_size": 16, "block_out_channels": [32, 64], "attention_levels": [False, False], "layers_per_block": 1,
    "batch_size": 8, "learning_rate": 1e-3, "warmup_steps": 2, "num_train_timesteps": 100,
    "augment_flip": True, "augment_affine": True,
}


def tiny_config(tmp: Path, generator: dict[str, Any] | None = None, mode: str = "L",
                **sections: Any) -> DomainConfig:
    overrides = {"runs_root": str(tmp / "runs"), "data": {"mode": mode},
                 "generator": {**TINY_GENERATOR, **(generator or {})},
                 "synthesis": {"mode": "noise"}}  # whatever the demo ships: a test that wants real-seeded says so
    return load_domain_config("demo", "cpu", deep_merge(overrides, sections))


def toy_images(per_class: int, size: int, seed: int, channels: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Two clearly different classes: a bright blob in the top half (0) or in the bottom half (1)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images, labels = [], []
    for label in (0, 1):
        for _ in range(per_class):
            cy = rng.uniform(0.2, 0.3) if label == 0 else rng.uniform(0.7, 0.8)
            cx = rng.uniform(0.3, 0.7)
            blob = np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 0.1**2)))
            img = np.clip(0.1 + 0.8 * blob + rng.normal(0, 0.03, blob.shape), 0, 1)
            images.append(np.round(img * 255).astype(np.uint8))
            labels.append(label)
    stack = torch.from_numpy(np.stack(images))[:, None].repeat(1, channels, 1, 1)
    return stack, torch.tensor(labels)


def toy_training_data(per_class: int = 12, size: int = 16) -> TrainingData:
    images, labels = toy_images(per_class, size, seed=3)
    sha = [f"{i:064x}" for i in range(len(labels))]
    return TrainingData(images, labels, ["top", "bottom"], sha, manifest_hash="toy-manifest")


def write_toy_folder(root: Path, per_class: int, size: int = 32, seed: int = 11) -> Path:
    """The toy set as an ImageFolder of grayscale PNGs (what a user would point the pipeline at)."""
    images, labels = toy_images(per_class, size, seed)
    names = ["top", "bottom"]
    for index, (image, label) in enumerate(zip(images, labels)):
        save_png(image[0].numpy(), root / names[int(label)] / f"{index:04d}.png")
    return root


def tiny_synthetic_set(runs_parent: Path, split_path: Path, per_class: int, train_steps: int = 20) -> Path:
    """Real generator output for tests that need a synthetic set: a tiny generator trained for a few
    steps on the split's training side, then the synthesis stage (its manifest path is returned)."""
    from pipeline.generator.stage import synthesis_stage, train_generator_stage

    config = tiny_config(runs_parent, {"train_steps": train_steps, "checkpoint_every": train_steps},
                         synthesis={"per_class": per_class, "sampler": "sde-dpmsolver++", "steps": 4,
                                    "batch_size": 32})
    generator = train_generator_stage(config, split_path, progress=False)
    return synthesis_stage(config, generator, progress=False).manifest_path
