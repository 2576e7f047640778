"""Synthesis: N PNGs per class (or a multiple of each class's real count) in the domain's mode, a manifest,
resumable by construction.

Images come from the exported generator (``ClassConditionalPipeline``, the same object a user
loads with ``from_pretrained``). Image ``i`` of class ``c`` is always ``images/<c>-<class slug>/<i>.png``
sampled with a generator seeded ``image_seed(seed, c, i)`` (the manifest's ``seed`` column), so
what a run must still do is simply the files that do not exist yet: a re-run after a kill fills
exactly the gaps. Every PNG is written to a temporary file and renamed into place, so an
existing PNG is a complete PNG; temporaries a SIGKILL left are removed.

Two modes (``synthesis.mode``): ``noise`` samples from pure noise; ``real-seeded`` (SDEdit) noises
image ``i mod n_c`` of class ``c``'s real training images (content-hash order) to ``synthesis.strength``
and denoises it with its own label. For every image the manifest records its seed image (real-seeded)
and the RMSE (pixels in [0, 1]) to that seed and to its nearest real training image: the privacy cost
the quality stage judges. Every sampler setting comes from ``SynthesisConfig`` through ``use_sampler``.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from pipeline.config import SynthesisConfig
from pipeline.errors import DataError
from pipeline.generator.pipeline import ClassConditionalPipeline
from pipeline.generator.sampling import image_seed, use_sampler
from pipeline.imageio import save_png
from pipeline.progress import Progress
from pipeline.store import remove_stale_temporaries

MANIFEST_COLUMNS = ["path", "relpath", "label", "class_index", "index", "sha256", "seed", "sampler", "steps",
                    "guidance_scale", "generator_hash", "mode", "width", "height", "synthesis_mode", "strength",
                    "seed_sha256", "seed_distance", "nn_distance"]


@dataclass
class RealSample:
    """The generator's real training images at its resolution: seeds for real-seeded synthesis and the
    reference for nearest-neighbour distances. ``images`` uint8 (N, C, H, W), rows in content-hash order."""

    images: torch.Tensor
    labels: torch.Tensor  # class index per row
    sha256s: list[str]

    def seed_of(self, class_index: int, image_index: int) -> int:
        """Row of the seed image of synthetic image ``image_index`` of class ``class_index``."""
        rows = (self.labels == class_index).nonzero().flatten()
        if len(rows) == 0:
            raise ValueError(f"no real training image of class {class_index} to seed from")
        return int(rows[image_index % len(rows)])


def rmse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise root-mean-square distance (pixels in [0, 1]) between uint8 batches a (N, ...) and b (M, ...)."""
    x, y = a.flatten(1).double() / 255.0, b.flatten(1).double() / 255.0
    d2 = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * x @ y.T
    return (d2.clamp(min=0) / x.shape[1]).sqrt()


def rmse_pairs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise RMSE (pixels in [0, 1]) between two uint8 batches of the same shape."""
    return ((a.double() - b.double()) / 255.0).pow(2).flatten(1).mean(1).sqrt()


def class_dirname(class_index: int, name: str) -> str:
    """The folder of one class: its index (unique, so labels that differ only in characters a file name
    cannot hold, such as ``a b`` / ``a_b``, never share a folder) and a readable slug (Unicode letters
    kept: 正常, Глиома)."""
    slug = re.sub(r"[^\w.-]+", "_", unicodedata.normalize("NFC", name)).strip("._")[:48]
    return f"{class_index:03d}-{slug or 'class'}"


def image_relpath(class_index: int, class_name: str, index: int) -> str:
    return f"images/{class_dirname(class_index, class_name)}/{index:05d}.png"


def class_counts(config: SynthesisConfig, class_names: list[str], real: RealSample | None) -> list[int]:
    """Images to generate per class: ``per_class`` each, or ``per_class_multiple`` times the class's count in
    the real training sample (at least 1)."""
    if config.per_class_multiple is None:
        return [config.per_class] * len(class_names)
    if real is None:
        raise ValueError("synthesis.per_class_multiple needs the real training sample's class counts (real=...)")
    return [max(1, round(config.per_class_multiple * int((real.labels == c).sum()))) for c in range(len(class_names))]


def missing_images(out_dir: Path, class_names: list[str], counts: list[int]) -> list[tuple[int, int]]:
    """(class index, image index) of every image not yet on disk."""
    return [(c, i) for c, name in enumerate(class_names) for i in range(counts[c])
            if not (out_dir / image_relpath(c, name, i)).is_file()]


def check_labels_distinct(manifest: pd.DataFrame, where: str | Path) -> None:
    """Distinct labels never share a file: neither a path nor identical content (a collapsed generator)."""
    for column, words in (("relpath", "the file"), ("sha256", "identical content, e.g.")):
        if column not in manifest or manifest.empty:
            continue
        labels = manifest.groupby(column)["label"].nunique()
        shared = labels[labels > 1]
        if len(shared):
            value = str(shared.index[0])
            names = sorted(map(str, manifest.loc[manifest[column] == value, "label"].unique()))
            hint = ("; delete the synthesis folder and re-run" if column == "relpath" else
                    "; the generator may have collapsed (check its losses) or classes are not distinguishable")
            raise DataError(f"{where}: labels {', '.join(map(repr, names))} share {words} "
                            f"{value if column == 'relpath' else value[:12]} ({len(shared)} shared){hint}")


def render(pipe: ClassConditionalPipeline, labels: list[int], seeds: list[int], config: SynthesisConfig,
           init: torch.Tensor | None = None, strength: float | None = None) -> torch.Tensor:
    """uint8 images (N, C, H, W), one per (label, seed), with every sampler setting of ``config``;
    ``init`` (in [-1, 1]) and ``strength`` make the run real-seeded."""
    use_sampler(pipe, config.sampler, config.steps, config)
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    out = pipe(class_labels=labels, num_inference_steps=config.steps, guidance_scale=config.guidance_scale,
               generator=generators, output_type="pt", image=init, strength=strength, eta=config.ddim_eta,
               **sampling_call_options(config)).images
    return out.mul(255).round().to(torch.uint8)


def sampling_call_options(config: SynthesisConfig) -> dict[str, Any]:
    """The diversity options as pipeline call arguments: the config's, with "off" spelled out so that a
    pipeline exported with other defaults samples exactly what this config says."""
    options = config.sampling_options()
    return {"guidance_interval": options.get("guidance_interval", (0.0, float("inf"))),
            "guidance_range": options.get("guidance_range", (config.guidance_scale, config.guidance_scale)),
            "cads_noise_scale": options.get("cads_noise_scale", 0.0),
            "cads_interval": options.get("cads_interval"), "cads_psi": options.get("cads_psi"),
            "guidance_method": options.get("guidance_method", "cfg")}


def generate(pipe: ClassConditionalPipeline, chunk: list[tuple[int, int]], seeds: list[int], config: SynthesisConfig,
             real: RealSample | None) -> torch.Tensor:
    """Images for (class, index) pairs: from noise, or real-seeded from their seed images."""
    labels = [c for c, _ in chunk]
    if config.mode == "noise":
        return render(pipe, labels, seeds, config)
    if real is None:
        raise ValueError("synthesis.mode = 'real-seeded' needs the real training images (real=...)")
    init = real.images[[real.seed_of(c, i) for c, i in chunk]].float().div(127.5).sub(1.0)
    return render(pipe, labels, seeds, config, init=init, strength=config.strength)


def synthesize(pipe: ClassConditionalPipeline, out_dir: str | Path, config: SynthesisConfig, seed: int,
               generator_hash: str, progress: bool = True, real: RealSample | None = None,
               counts: list[int] | None = None) -> pd.DataFrame:
    """Write the missing PNGs under ``out_dir/images`` and return the manifest of every class's images.

    ``real`` (the generator's training images) is required for ``mode: real-seeded`` and adds the
    nearest-neighbour distances to the manifest in either mode. ``counts`` (images per class) overrides the
    config's (the filter asks for more of a class whose images it dropped).
    """
    if config.mode == "real-seeded" and real is None:
        raise ValueError("synthesis.mode = 'real-seeded' needs the real training images (real=...)")
    out_dir = Path(out_dir)
    class_names = list(pipe.config.class_names)
    for folder in {out_dir / image_relpath(c, name, 0) for c, name in enumerate(class_names)}:
        folder.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(folder.parent)
    counts = counts or class_counts(config, class_names, real)
    todo = missing_images(out_dir, class_names, counts)
    bar = tqdm(total=len(todo), desc="synthesis", unit="img", disable=not progress)
    total = sum(counts)
    report = Progress("synthesis", total, start=total - len(todo), unit="image")
    for start in range(0, len(todo), config.batch_size):
        chunk = todo[start:start + config.batch_size]
        images = generate(pipe, chunk, [image_seed(seed, c, i) for c, i in chunk], config, real).numpy()
        for (c, i), image in zip(chunk, images):
            save_png(to_pixels(image), out_dir / image_relpath(c, class_names[c], i))
        bar.update(len(chunk))
        report.update(total - len(todo) + start + len(chunk))
    bar.close()
    return build_manifest(out_dir, pipe, config, seed, generator_hash, real, counts)


def to_pixels(image: np.ndarray) -> np.ndarray:
    """(C, H, W) uint8 -> HxW (grayscale stays one channel) or HxWx3."""
    return image[0] if image.shape[0] == 1 else np.ascontiguousarray(image.transpose(1, 2, 0))


def build_manifest(out_dir: Path, pipe: ClassConditionalPipeline, config: SynthesisConfig, seed: int,
                   generator_hash: str, real: RealSample | None = None, counts: list[int] | None = None
                   ) -> pd.DataFrame:
    rows = []
    counts = counts or class_counts(config, list(pipe.config.class_names), real)
    size = pipe.unet.config.sample_size
    seeded = config.mode == "real-seeded"
    for c, name in enumerate(pipe.config.class_names):
        for i in range(counts[c]):
            relpath = image_relpath(c, name, i)
            path = (out_dir / relpath).resolve()
            rows.append({"path": str(path), "relpath": relpath, "label": name, "class_index": c, "index": i,
                         "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "seed": image_seed(seed, c, i),
                         "sampler": config.sampler, "steps": config.steps,
                         "guidance_scale": config.guidance_scale, "generator_hash": generator_hash,
                         "mode": pipe.config.mode, "width": size, "height": size,
                         "synthesis_mode": config.mode, "strength": config.strength if seeded else None,
                         "seed_sha256": real.sha256s[real.seed_of(c, i)] if seeded and real is not None else None,
                         "seed_distance": None, "nn_distance": None})
    table = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    check_labels_distinct(table, out_dir)
    if real is not None and len(table):
        add_distances(table, real)
    return table


def add_distances(table: pd.DataFrame, real: RealSample) -> None:
    """RMSE of every synthetic image to its seed (real-seeded) and to its nearest real training image."""
    from pipeline.imageio import read_image

    mode = str(table["mode"].iloc[0])
    synthetic = torch.stack([torch.from_numpy(_chw(read_image(p, mode).pixels)) for p in table["path"]])
    nearest = torch.cat([rmse(synthetic[k:k + 256], real.images).min(1).values
                         for k in range(0, len(synthetic), 256)])
    table["nn_distance"] = nearest.numpy().round(5)
    if table["seed_sha256"].notna().any():
        row_of = {sha: k for k, sha in enumerate(real.sha256s)}
        seeds = real.images[[row_of[s] for s in table["seed_sha256"]]]
        table["seed_distance"] = rmse_pairs(synthetic, seeds).numpy().round(5)


def _chw(pixels: np.ndarray) -> np.ndarray:
    return np.array(pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1), copy=True)


def sample_grid(pipe: ClassConditionalPipeline, per_class: int, seed: int, config: SynthesisConfig | None = None,
                pad: int = 2, real: RealSample | None = None) -> np.ndarray:
    """One row per class, ``per_class`` samples each, as an L or RGB uint8 image (for eyes, not training).

    The same sampler settings as synthesis (``config``, default SynthesisConfig()); pixel values are
    written as sampled (no per-image stretch), so the grid shows the brightness the classifiers see.
    """
    config = config or SynthesisConfig()
    rows = len(pipe.config.class_names)
    chunk = [(c, i) for c in range(rows) for i in range(per_class)]
    images = generate(pipe, chunk, [image_seed(seed, c, i) for c, i in chunk], config, real).numpy()
    size, channels = pipe.unet.config.sample_size, images.shape[1]
    grid = np.full((channels, rows * (size + pad) + pad, per_class * (size + pad) + pad), 255, dtype=np.uint8)
    for k, image in enumerate(images):
        r, col = divmod(k, per_class)
        y, x = pad + r * (size + pad), pad + col * (size + pad)
        grid[:, y:y + size, x:x + size] = image
    return to_pixels(grid)
