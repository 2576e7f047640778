"""A labelled phantom dataset the project makes itself: scan-like images, no download, seeded.

Four classes differ in structure, not brightness: a head-like ellipse with skull, tissue texture
and ventricles, plus a lesion that is absent (``normal``), a filled disc (``round``), an annulus
(``ring``) or a long thin ellipse (``elongated``). Lesion position, size, orientation and contrast
(brighter or darker than tissue), tissue brightness and noise all vary per image, so the mean
intensity says almost nothing about the class while a small CNN learns it easily. The RGB variant
renders the same structures through a per-image stain-like colour map.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter
from tqdm.auto import tqdm

from pipeline.imageio import save_png

DEMO_CLASSES: tuple[str, ...] = ("normal", "round", "ring", "elongated")


@dataclass(frozen=True)
class PhantomSpec:
    per_class: int = 200
    size: int = 64
    mode: str = "L"  # "L" or "RGB"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("L", "RGB"):
            raise ValueError(f"mode must be 'L' or 'RGB', got {self.mode!r}")
        if self.size < 32:
            raise ValueError(f"size must be at least 32 px, got {self.size}")
        if self.per_class < 1:
            raise ValueError(f"per_class must be >= 1, got {self.per_class}")


def render_phantom(label: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One grayscale phantom in [0, 1], HxW float."""
    if label not in DEMO_CLASSES:
        raise ValueError(f"unknown phantom class {label!r}; known: {', '.join(DEMO_CLASSES)}")
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size  # coordinates in [0, 1)
    cy, cx = 0.5 + rng.normal(0, 0.02, 2)
    ry, rx = rng.uniform(0.36, 0.44), rng.uniform(0.30, 0.40)
    head = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
    tissue_level = rng.uniform(0.30, 0.65)
    texture = gaussian_filter(rng.normal(0, 1, (size, size)), sigma=size / 12)
    texture /= np.abs(texture).max() + 1e-8
    image = np.where(head < 1.0, tissue_level + 0.08 * texture, 0.0)
    image = np.where((head >= 0.85) & (head < 1.0), rng.uniform(0.75, 0.95), image)  # skull
    for side in (-1, 1):  # ventricles: dark, roughly symmetric
        vy, vx = cy - 0.02, cx + side * rng.uniform(0.05, 0.08)
        vent = ((yy - vy) / rng.uniform(0.05, 0.09)) ** 2 + ((xx - vx) / rng.uniform(0.02, 0.035)) ** 2
        image = np.where(vent < 1.0, tissue_level * 0.35, image)
    if label != "normal":
        image = _add_lesion(image, label, yy, xx, cy, cx, ry, rx, tissue_level, rng)
    image = gaussian_filter(image, sigma=0.6)
    image = image + rng.normal(0, rng.uniform(0.015, 0.05), image.shape)
    return np.clip(image, 0.0, 1.0)


def _add_lesion(image: np.ndarray, label: str, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float,
                ry: float, rx: float, tissue_level: float, rng: np.random.Generator) -> np.ndarray:
    angle = rng.uniform(0, 2 * np.pi)
    dist = rng.uniform(0.1, 0.5)
    ly, lx = cy + dist * ry * np.sin(angle), cx + dist * rx * np.cos(angle)
    contrast = rng.uniform(0.3, 0.45) * rng.choice([-1.0, 1.0])
    level = float(np.clip(tissue_level + contrast, 0.05, 1.0))
    radius = rng.uniform(0.11, 0.16)
    if label == "round":
        mask = ((yy - ly) ** 2 + (xx - lx) ** 2) < radius**2
    elif label == "ring":
        r2 = (yy - ly) ** 2 + (xx - lx) ** 2
        mask = (r2 < radius**2) & (r2 > (radius * rng.uniform(0.45, 0.6)) ** 2)
    else:  # elongated
        theta = rng.uniform(0, np.pi)
        u = (yy - ly) * np.cos(theta) + (xx - lx) * np.sin(theta)
        v = -(yy - ly) * np.sin(theta) + (xx - lx) * np.cos(theta)
        mask = (u / (radius * rng.uniform(1.6, 2.2))) ** 2 + (v / (radius * rng.uniform(0.3, 0.45))) ** 2 < 1.0
    return np.where(mask, level, image)


def colourise(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Map a [0, 1] image through a per-image stain-like two-colour ramp (pink background, purple dense)."""
    low = np.array([0.95, 0.85, 0.90]) + rng.normal(0, 0.02, 3)
    high = np.array([0.35, 0.15, 0.55]) + rng.normal(0, 0.04, 3)
    rgb = low[None, None, :] * (1 - gray[..., None]) + high[None, None, :] * gray[..., None]
    return np.clip(rgb, 0.0, 1.0)


def make_demo_dataset(out_dir: str | Path, spec: PhantomSpec = PhantomSpec(), progress: bool = True) -> Path:
    """Write ``spec.per_class`` PNGs per class under ``out_dir/<class>/`` (ImageFolder layout).

    Deterministic: the same spec writes byte-identical files. Existing files are kept, not rewritten,
    so re-running is cheap and never touches a finished dataset.
    """
    out_dir = Path(out_dir)
    seed_seq = np.random.SeedSequence(spec.seed)
    jobs = [(label, index) for label in DEMO_CLASSES for index in range(spec.per_class)]
    child_seeds = seed_seq.spawn(len(jobs))
    for (label, index), child in tqdm(list(zip(jobs, child_seeds)), desc="demo data", unit="img",
                                      disable=not progress):
        target = out_dir / label / f"{label}_{index:04d}.png"
        if target.exists():
            continue
        rng = np.random.default_rng(child)
        gray = render_phantom(label, spec.size, rng)
        pixels = colourise(gray, rng) if spec.mode == "RGB" else gray
        save_png(np.round(pixels * 255).astype(np.uint8), target)
    return out_dir


DEMO_DATA_DIRNAME = "demo-data"


def demo_dataset(runs_root: str | Path, spec: PhantomSpec = PhantomSpec(), progress: bool = True) -> Path:
    """The demo's phantom set under ``<runs_root>/demo-data/<mode>-<size>px-<per_class>`` (made once)."""
    out = Path(runs_root) / DEMO_DATA_DIRNAME / f"{spec.mode}-{spec.size}px-{spec.per_class}"
    return make_demo_dataset(out, spec, progress=progress)
