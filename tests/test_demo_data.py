from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from folder_snapshot import snapshot
from pipeline.demo_data import DEMO_CLASSES, PhantomSpec, make_demo_dataset


def test_deterministic_from_seed(tmp_path: Path) -> None:
    a = make_demo_dataset(tmp_path / "a", PhantomSpec(3, 32, "L", 5), progress=False)
    b = make_demo_dataset(tmp_path / "b", PhantomSpec(3, 32, "L", 5), progress=False)
    c = make_demo_dataset(tmp_path / "c", PhantomSpec(3, 32, "L", 6), progress=False)
    assert snapshot(a) == snapshot(b) != snapshot(c)
    assert sorted(p.name for p in a.iterdir()) == sorted(DEMO_CLASSES)


def test_rgb_variant_is_rgb(tmp_path: Path) -> None:
    out = make_demo_dataset(tmp_path, PhantomSpec(2, 32, "RGB", 0), progress=False)
    image = Image.open(next(out.rglob("*.png")))
    assert image.mode == "RGB" and image.size == (32, 32)


def test_classes_are_not_separable_by_brightness_but_a_small_cnn_learns_them(tmp_path: Path) -> None:
    import torch
    from torch import nn

    root = make_demo_dataset(tmp_path, PhantomSpec(60, 32, "L", 11), progress=False)
    paths = sorted(root.rglob("*.png"))
    names = sorted({p.parent.name for p in paths})
    labels = np.array([names.index(p.parent.name) for p in paths])
    pixels = np.stack([np.asarray(Image.open(p), dtype=np.float32) / 255 for p in paths])
    brightness = np.stack([pixels.mean(axis=(1, 2)), pixels.std(axis=(1, 2))], axis=1)
    by_brightness = cross_val_score(make_pipeline(StandardScaler(), LogisticRegression()), brightness, labels,
                                    cv=5).mean()
    assert by_brightness < 0.45, f"mean/std intensity alone separates the classes ({by_brightness:.2f})"

    torch.manual_seed(0)
    order = np.random.default_rng(0).permutation(len(paths))
    train, test = order[:160], order[160:]
    x, y = torch.from_numpy(pixels[:, None]), torch.from_numpy(labels)
    x = (x - x.mean()) / x.std()
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                          nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(64, len(names)))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(25):
        for batch in torch.randperm(len(train)).split(16):
            index = torch.from_numpy(train)[batch]
            loss = nn.functional.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x[test]).argmax(1) == y[test]).float().mean().item()
    assert accuracy >= 0.6, f"a small CNN should learn the phantom classes (held-out accuracy {accuracy:.2f})"


def test_bad_spec_is_rejected() -> None:
    with pytest.raises(ValueError, match="mode"):
        PhantomSpec(mode="CMYK")
    with pytest.raises(ValueError, match="size"):
        PhantomSpec(size=8)
