"""Balanced synthesis: N PNGs per class in the domain's mode, a manifest, resumable by construction.

Image ``i`` of class ``c`` is always ``images/<class>/<i>.png`` sampled from seed
``image_seed(seed, c, i)``, so what a run must still do is simply the files that do not exist
yet: a re-run after a kill fills exactly the gaps. Every PNG is written to a temporary file and
renamed into place, so an existing PNG is a complete PNG; temporaries a SIGKILL left are removed.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from pipeline.config import SynthesisConfig
from pipeline.generator.checkpoint import remove_stale_temporaries
from pipeline.generator.data import to_uint8
from pipeline.generator.sampling import LoadedGenerator, image_seed, sample
from pipeline.imageio import save_png

MANIFEST_COLUMNS = ["path", "relpath", "label", "class_index", "index", "sha256", "seed", "sampler", "steps",
                    "guidance_scale", "generator_hash", "mode", "width", "height"]


def class_dirname(name: str) -> str:
    """A file-system-safe folder name for a class label."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "class"


def image_relpath(class_name: str, index: int) -> str:
    return f"images/{class_dirname(class_name)}/{index:05d}.png"


def to_pixels(image: np.ndarray) -> np.ndarray:
    """(C, H, W) uint8 -> HxW (grayscale stays one channel) or HxWx3."""
    return image[0] if image.shape[0] == 1 else np.ascontiguousarray(image.transpose(1, 2, 0))


def missing_images(out_dir: Path, class_names: list[str], per_class: int) -> list[tuple[int, int]]:
    """(class index, image index) of every image not yet on disk."""
    return [(c, i) for c, name in enumerate(class_names) for i in range(per_class)
            if not (out_dir / image_relpath(name, i)).is_file()]


def synthesize(generator: LoadedGenerator, out_dir: str | Path, config: SynthesisConfig, seed: int,
               generator_hash: str, progress: bool = True) -> pd.DataFrame:
    """Write the missing PNGs under ``out_dir/images`` and return the manifest of all N x classes images."""
    out_dir = Path(out_dir)
    for folder in {out_dir / image_relpath(name, 0) for name in generator.class_names}:
        folder.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(folder.parent)
    todo = missing_images(out_dir, generator.class_names, config.per_class)
    bar = tqdm(total=len(todo), desc="synthesis", unit="img", disable=not progress)
    for start in range(0, len(todo), config.batch_size):
        chunk = todo[start:start + config.batch_size]
        labels = [c for c, _ in chunk]
        seeds = [image_seed(seed, c, i) for c, i in chunk]
        images = to_uint8(sample(generator, labels, seeds, config.sampler, config.steps,
                                 config.guidance_scale)).numpy()
        for (c, i), image in zip(chunk, images):
            save_png(to_pixels(image), out_dir / image_relpath(generator.class_names[c], i))
        bar.update(len(chunk))
    bar.close()
    return build_manifest(out_dir, generator, config, seed, generator_hash)


def build_manifest(out_dir: Path, generator: LoadedGenerator, config: SynthesisConfig, seed: int,
                   generator_hash: str) -> pd.DataFrame:
    rows = []
    for c, name in enumerate(generator.class_names):
        for i in range(config.per_class):
            relpath = image_relpath(name, i)
            path = (out_dir / relpath).resolve()
            rows.append({"path": str(path), "relpath": relpath, "label": name, "class_index": c, "index": i,
                         "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "seed": image_seed(seed, c, i),
                         "sampler": config.sampler, "steps": config.steps,
                         "guidance_scale": config.guidance_scale, "generator_hash": generator_hash,
                         "mode": generator.mode, "width": generator.image_size, "height": generator.image_size})
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


def sample_grid(generator: LoadedGenerator, per_class: int, seed: int, sampler: str = "dpmsolver++",
                steps: int = 20, guidance_scale: float = 2.0, pad: int = 2) -> np.ndarray:
    """One row per class, ``per_class`` samples each, as an L or RGB uint8 image (for eyes, not training)."""
    labels = [c for c in range(len(generator.class_names)) for _ in range(per_class)]
    seeds = [image_seed(seed, c, i) for c in range(len(generator.class_names)) for i in range(per_class)]
    images = to_uint8(sample(generator, labels, seeds, sampler, steps, guidance_scale)).numpy()
    size, channels = generator.image_size, generator.channels
    rows = len(generator.class_names)
    grid = np.full((channels, rows * (size + pad) + pad, per_class * (size + pad) + pad), 255, dtype=np.uint8)
    for k, image in enumerate(images):
        r, col = divmod(k, per_class)
        y, x = pad + r * (size + pad), pad + col * (size + pad)
        grid[:, y:y + size, x:x + size] = image
    return to_pixels(grid)
