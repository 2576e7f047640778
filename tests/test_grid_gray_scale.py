"""Sample grids keep every image's gray levels: a dark image stays dark, nothing is stretched per image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from reports.grids import LABEL_WIDTH, class_grid


def test_grid_tiles_keep_the_gray_levels_of_their_images(tmp_path: Path) -> None:
    dark = np.zeros((40, 40), np.uint8)
    dark[10:30, 10:30] = 40  # a dim image: a per-image stretch would make it 0..255
    bright = np.full((16, 16), 200, np.uint8)
    Image.fromarray(dark).save(tmp_path / "dark.png")
    Image.fromarray(bright).save(tmp_path / "bright.png")
    for source_size in (None, 16):
        grid = np.asarray(Image.open(class_grid({"real": [tmp_path / "dark.png"], "synth": [tmp_path / "bright.png"]},
                                                tmp_path / "grid.png", tile=32, source_size=source_size)))
        real_tile = grid[:32, LABEL_WIDTH:LABEL_WIDTH + 32, 0]
        synth_tile = grid[32:64, LABEL_WIDTH:LABEL_WIDTH + 32, 0]
        assert real_tile.max() <= 45 and real_tile.min() == 0
        assert (synth_tile == 200).all()
