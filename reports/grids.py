"""Image grids for people: one row per class, real next to synthetic, written as one PNG.

Pixel values are pasted as they are (no per-image contrast stretch, no normalisation), so real and
synthetic tiles share one gray scale and a synthetic image that is too bright looks too bright.
With ``source_size`` every image is first brought to the resolution the models saw (the same
pad-to-square + resize as training), then enlarged to the tile with nearest-neighbour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pipeline.image_tensors import square_resize
from pipeline.imageio import read_image
from pipeline.store import atomic_save_with

LABEL_WIDTH = 120


def class_grid(rows: Mapping[str, Sequence[str | Path]], target: str | Path, mode: str = "L", tile: int = 64,
               title: str | None = None, source_size: int | None = None) -> Path:
    """Write a grid with one labelled row per key of ``rows`` (e.g. "glioma / real") to ``target``."""
    if not rows:
        raise ValueError("class_grid needs at least one row")
    columns = max(len(paths) for paths in rows.values())
    header = 24 if title else 0
    canvas = Image.new("RGB", (LABEL_WIDTH + columns * tile, header + len(rows) * tile), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((6, 6), title, fill="black")
    for row, (name, paths) in enumerate(rows.items()):
        top = header + row * tile
        draw.text((6, top + tile // 2 - 6), str(name)[:18], fill="black")
        for column, path in enumerate(paths):
            pixels = read_image(path, mode).pixels
            if source_size is not None:
                pixels = square_resize(pixels, source_size)
                tile_image = Image.fromarray(np.asarray(pixels)).resize((tile, tile), Image.Resampling.NEAREST)
            else:
                tile_image = Image.fromarray(np.asarray(square_resize(pixels, tile)))
            tile_image = tile_image.convert("RGB")
            canvas.paste(tile_image, (LABEL_WIDTH + column * tile, top))
    return atomic_save_with(target, lambda tmp: canvas.save(tmp, format="PNG"))
