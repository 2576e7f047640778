"""Balanced synthesis: N PNGs per class in the domain's mode, a manifest, resumable by construction.

Images come from the exported generator (``ClassConditionalPipeline``, the same object a user
loads with ``from_pretrained``). Image ``i`` of class ``c`` is always ``images/<class>/<i>.png``
sampled with a generator seeded ``image_seed(seed, c, i)`` (the manifest's ``seed`` column), so
what a run must still do is simply the files that do not exist yet: a re-run after a kill fills
exactly the gaps. Every PNG is written to a temporary file and renamed into place, so an
existing PNG is a complete PNG; temporaries a SIGKILL left are removed.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from pipeline.config import SynthesisConfig
from pipeline.generator.checkpoint import remove_stale_temporaries
from pipeline.generator.pipeline import ClassConditionalPipeline
from pipeline.generator.sampling import image_seed, use_sampler
from pipeline.imageio import save_png

MANIFEST_COLUMNS = ["path", "relpath", "label", "class_index", "index", "sha256", "seed", "sampler", "steps",
                    "guidance_scale", "generator_hash", "mode", "width", "height"]


def class_dirname(name: str) -> str:
    """A file-system-safe folder name for a class label."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "class"


def image_relpath(class_name: str, index: int) -> str:
    return f"images/{class_dirname(class_name)}/{index:05d}.png"


def missing_images(out_dir: Path, class_names: list[str], per_class: int) -> list[tuple[int, int]]:
    """(class index, image index) of every image not yet on disk."""
    return [(c, i) for c, name in enumerate(class_names) for i in range(per_class)
            if not (out_dir / image_relpath(name, i)).is_file()]


def generate(pipe: ClassConditionalPipeline, labels: list[int], seeds: list[int], steps: int,
             guidance_scale: float) -> list[np.ndarray]:
    """One image per (label, seed) as an L (H, W) or RGB (H, W, 3) uint8 array."""
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    images = pipe(class_labels=labels, num_inference_steps=steps, guidance_scale=guidance_scale,
                  generator=generators, output_type="pil").images
    return [np.asarray(image) for image in images]


def synthesize(pipe: ClassConditionalPipeline, out_dir: str | Path, config: SynthesisConfig, seed: int,
               generator_hash: str, progress: bool = True) -> pd.DataFrame:
    """Write the missing PNGs under ``out_dir/images`` and return the manifest of all N x classes images.

    The pipeline samples with ``config.sampler`` (swapped in on its training noise schedule).
    """
    out_dir = Path(out_dir)
    use_sampler(pipe, config.sampler, config.steps)
    class_names = list(pipe.config.class_names)
    for folder in {out_dir / image_relpath(name, 0) for name in class_names}:
        folder.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(folder.parent)
    todo = missing_images(out_dir, class_names, config.per_class)
    bar = tqdm(total=len(todo), desc="synthesis", unit="img", disable=not progress)
    for start in range(0, len(todo), config.batch_size):
        chunk = todo[start:start + config.batch_size]
        images = generate(pipe, [c for c, _ in chunk], [image_seed(seed, c, i) for c, i in chunk], config.steps,
                          config.guidance_scale)
        for (c, i), image in zip(chunk, images):
            save_png(image, out_dir / image_relpath(class_names[c], i))
        bar.update(len(chunk))
    bar.close()
    return build_manifest(out_dir, pipe, config, seed, generator_hash)


def build_manifest(out_dir: Path, pipe: ClassConditionalPipeline, config: SynthesisConfig, seed: int,
                   generator_hash: str) -> pd.DataFrame:
    rows = []
    size = pipe.unet.config.sample_size
    for c, name in enumerate(pipe.config.class_names):
        for i in range(config.per_class):
            relpath = image_relpath(name, i)
            path = (out_dir / relpath).resolve()
            rows.append({"path": str(path), "relpath": relpath, "label": name, "class_index": c, "index": i,
                         "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "seed": image_seed(seed, c, i),
                         "sampler": config.sampler, "steps": config.steps,
                         "guidance_scale": config.guidance_scale, "generator_hash": generator_hash,
                         "mode": pipe.config.mode, "width": size, "height": size})
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


def sample_grid(pipe: ClassConditionalPipeline, per_class: int, seed: int, sampler: str = "sde-dpmsolver++",
                steps: int = 20, guidance_scale: float = 2.0, pad: int = 2) -> np.ndarray:
    """One row per class, ``per_class`` samples each, as an L or RGB uint8 image (for eyes, not training)."""
    use_sampler(pipe, sampler, steps)
    rows = len(pipe.config.class_names)
    labels = [c for c in range(rows) for _ in range(per_class)]
    seeds = [image_seed(seed, c, i) for c in range(rows) for i in range(per_class)]
    images = generate(pipe, labels, seeds, steps, guidance_scale)
    size = pipe.unet.config.sample_size
    grid = np.full((rows * (size + pad) + pad, per_class * (size + pad) + pad, *images[0].shape[2:]), 255,
                   dtype=np.uint8)
    for k, image in enumerate(images):
        r, col = divmod(k, per_class)
        y, x = pad + r * (size + pad), pad + col * (size + pad)
        grid[y:y + size, x:x + size] = image
    return grid
