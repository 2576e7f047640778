from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline import image_tensors
from pipeline.errors import IntegrityError
from pipeline.image_tensors import load_image_tensors, pad_to_square, square_resize
from pipeline.validate import sha256_file


def test_pad_to_square_keeps_the_whole_image_centred() -> None:
    wide = np.full((20, 40), 9, np.uint8)
    wide[:, 0] = 200  # a bright column at the left edge must survive (no centre crop)
    square = pad_to_square(wide)
    assert square.shape == (40, 40)
    assert (square[10:30, 0] == 200).all() and (square[10:30, 1:] == 9).all()
    assert square_resize(np.zeros((30, 50, 3), np.uint8), 16).shape == (16, 16, 3)


def test_tensor_cache_is_reused_and_channels_are_explicit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = []
    for i in range(3):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((30, 40, 3), 40 * i, np.uint8)).save(path)
        paths.append(str(path))
    hashes = [sha256_file(p) for p in paths]
    gray = load_image_tensors(paths, hashes, "L", 16, tmp_path / "cache", progress=False)
    rgb = load_image_tensors(paths, hashes, "RGB", 16, tmp_path / "cache", progress=False)
    assert gray.shape == (3, 1, 16, 16) and rgb.shape == (3, 3, 16, 16) and gray.dtype == torch.uint8
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2
    monkeypatch.setattr(image_tensors, "read_image", None)  # served from the cache: nothing is decoded again
    again = load_image_tensors(paths, hashes, "L", 16, tmp_path / "cache", progress=False)
    assert torch.equal(again, gray)


def test_a_file_changed_after_ingest_is_named_and_never_served_from_the_cache(tmp_path: Path) -> None:
    paths = []
    for i in range(2):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((20, 20), 50 * i, np.uint8)).save(path)
        paths.append(str(path))
    hashes = [sha256_file(p) for p in paths]
    load_image_tensors(paths, hashes, "L", 16, tmp_path / "cache", progress=False)
    Path(paths[1]).write_bytes(Path(paths[0]).read_bytes())  # a training image copied over a held-out one
    with pytest.raises(IntegrityError, match=f"^{paths[1]} changed after ingest .*re-ingest the dataset"):
        load_image_tensors(paths, hashes, "L", 16, tmp_path / "cache", progress=False)
    Path(paths[1]).unlink()
    with pytest.raises(IntegrityError, match=f"^{paths[1]} is missing"):
        load_image_tensors(paths, hashes, "L", 16, tmp_path / "cache", progress=False)
