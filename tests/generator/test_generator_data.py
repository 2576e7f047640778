"""Training data: the held-out side is provably unseen, batches are resumable, augmentation is light."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from gen_helpers import TINY_GENERATOR
from pipeline.config import GeneratorConfig
from pipeline.errors import LeakageError
from pipeline.generator.data import augment, batch_indices, check_disjoint, manifest_hash, step_generator
from pipeline.split import Split


def _split(train_sha: list[str], test_sha: list[str]) -> Split:
    rows = [{"sha256": s, "label": "a", "relpath": s, "split": "train"} for s in train_sha]
    rows += [{"sha256": s, "label": "a", "relpath": s, "split": "test"} for s in test_sha]
    return Split(pd.DataFrame(rows), "h", 0, 0.2, False)


def test_check_disjoint_accepts_the_training_side_and_rejects_leaks() -> None:
    split = _split(["a1", "a2"], ["b1", "b2"])
    check_disjoint(["a1", "a2"], manifest_hash(split.train), split)
    with pytest.raises(LeakageError, match="training manifest hash does not match"):
        check_disjoint(["a1", "a2"], "other", split)
    with pytest.raises(LeakageError, match="1 of the generator's training images are in the held-out set"):
        check_disjoint(["a1", "b2"], manifest_hash(split.train), split)


def test_batches_cover_every_image_once_per_epoch_and_split_across_processes() -> None:
    n, batch = 10, 4
    seen = torch.cat([batch_indices(n, batch, step, seed=3) for step in range(5)])  # 20 draws = 2 epochs
    assert sorted(seen[:10].tolist()) == list(range(10)) and sorted(seen[10:].tolist()) == list(range(10))
    assert torch.equal(batch_indices(n, batch, 7, 3), batch_indices(n, batch, 7, 3))  # a pure function
    two = [batch_indices(n, 2, 0, 3, process=p, processes=2) for p in (0, 1)]
    assert torch.equal(torch.cat(two), batch_indices(n, 4, 0, 3))


def test_augmentation_is_light_and_reproducible() -> None:
    x = torch.linspace(-1, 1, 16).repeat(4, 1, 16, 1)
    flip_only = GeneratorConfig(**{**TINY_GENERATOR, "augment_flip": True, "augment_affine": False})
    out = augment(x, flip_only, step_generator(0, 0))
    assert all(torch.equal(o, x[0]) or torch.equal(o, x[0].flip(-1)) for o in out)
    none = GeneratorConfig(**{**TINY_GENERATOR, "augment_flip": False, "augment_affine": False})
    assert torch.equal(augment(x, none, step_generator(0, 0)), x)
    affine = GeneratorConfig(**{**TINY_GENERATOR, "augment_flip": False, "augment_affine": True})
    a, b = augment(x, affine, step_generator(0, 1)), augment(x, affine, step_generator(0, 1))
    assert torch.equal(a, b) and a.shape == x.shape
    assert (a - x).abs().mean() < 0.15  # a few degrees / percent, not a different image
