"""Decode and resize a set of images once, keep them as one uint8 tensor (N, C, H, W) on disk.

Both the generator and the classifiers train for many epochs over the same few thousand
images; decoding JPEGs every epoch would make the data loader the bottleneck on a 2-core
machine. The cache is keyed by the images' content hashes, the channel mode and the size, so
any stage asking for the same images at the same size shares one file; every call first proves
that the files still hold those contents (``pipeline.integrity``), so the cache can never serve
pixels of content that is no longer there, nor store another content's pixels under a hash.

Non-square images are padded to a square (with the mean of their border, so the pad looks like
background) before resizing: a centre crop would cut the lung fields of wide CT slices.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from pipeline.config import hash_payload
from pipeline.imageio import read_image
from pipeline.integrity import verify_files
from pipeline.progress import Progress
from pipeline.store import atomic_save_with


def pad_to_square(pixels: np.ndarray) -> np.ndarray:
    """Pad an HxW or HxWxC uint8 array to a square, centred, filled with its mean border value."""
    height, width = pixels.shape[:2]
    if height == width:
        return pixels
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]], axis=0)
    fill = np.round(border.mean(axis=0)).astype(np.uint8)
    side = max(height, width)
    out = np.empty((side, side, *pixels.shape[2:]), dtype=np.uint8)
    out[...] = fill
    top, left = (side - height) // 2, (side - width) // 2
    out[top:top + height, left:left + width] = pixels
    return out


def square_resize(pixels: np.ndarray, size: int) -> np.ndarray:
    """Pad to square and resize to ``size`` x ``size`` (Lanczos; area-like when shrinking)."""
    square = pad_to_square(pixels)
    if square.shape[0] == size:
        return square
    return np.asarray(Image.fromarray(square).resize((size, size), Image.Resampling.LANCZOS))


def to_chw_tensor(pixels: np.ndarray) -> torch.Tensor:
    """HxW or HxWxC uint8 -> CxHxW uint8 tensor (channels explicit)."""
    array = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    return torch.from_numpy(np.array(array, copy=True))


def domain_cache_dir(runs_root: str | Path, domain: str) -> Path:
    """The one decode-once cache folder of a domain, shared by every stage (keyed by content, so safe)."""
    return Path(runs_root) / domain / "cache" / "images"


def cache_key(sha256s: Sequence[str], mode: str, size: int) -> str:
    return hash_payload({"sha256": list(sha256s), "mode": mode, "size": size, "resize": "pad-lanczos-v1"})


def load_image_tensors(paths: Sequence[str], sha256s: Sequence[str], mode: str, size: int,
                       cache_dir: str | Path | None = None, progress: bool = True) -> torch.Tensor:
    """All images as one uint8 tensor (N, C, size, size), read from / written to ``cache_dir`` when given."""
    if len(paths) != len(sha256s):
        raise ValueError(f"paths ({len(paths)}) and sha256s ({len(sha256s)}) differ in length")
    verify_files(paths, sha256s)  # the cache is keyed by recorded content: the files must still hold it
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"images-{cache_key(sha256s, mode, size)}.pt"
        if cache_file.is_file():
            try:
                return torch.load(cache_file, weights_only=True)
            except Exception:  # a damaged cache is rebuilt, never trusted
                pass
    channels = 1 if mode == "L" else 3
    out = torch.empty((len(paths), channels, size, size), dtype=torch.uint8)
    report = Progress(f"decode {size}px", len(paths), unit="image")
    for index, path in enumerate(tqdm(paths, desc=f"decode {size}px", unit="img", disable=not progress)):
        out[index] = to_chw_tensor(square_resize(read_image(path, mode).pixels, size))
        report.update(index + 1)
    if cache_file is not None:
        atomic_save_with(cache_file, lambda tmp: torch.save(out, tmp))
    return out
