"""Session fixtures for the classifier tests (phantom split and synthetic set, made once)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clf_helpers import FIVE_ARM_STEPS, demo_config, make_split
from pipeline.config import DEFAULT_ARMS, DomainConfig
from tests.generator.gen_helpers import tiny_synthetic_set

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network here: hub lookups must fail fast


@pytest.fixture(scope="session")
def demo_split(tmp_path_factory: pytest.TempPathFactory) -> tuple[DomainConfig, Path]:
    tmp = tmp_path_factory.mktemp("demo-split")
    config = demo_config(tmp)
    return config, make_split(config, per_class=50)


@pytest.fixture(scope="session")
def synthetic_manifest(demo_split: tuple[DomainConfig, Path]) -> Path:
    """Actual generator output: a tiny generator trained on the demo split's training side, 20 images per class."""
    config, split_path = demo_split
    return tiny_synthetic_set(Path(config.runs_root).parent, split_path, per_class=20)


@pytest.fixture(scope="session")
def five_arms(demo_split: tuple[DomainConfig, Path], synthetic_manifest: Path) -> tuple[DomainConfig, Path]:
    """One classifiers-stage run of all five arms on the phantom split (tiny step budget): config, results path."""
    from classifiers.stage import classifiers_stage

    base, split_path = demo_split
    config = demo_config(Path(base.runs_root).parent, image_size=32, folds=2, batch_size=16,
                         max_steps=FIVE_ARM_STEPS, min_steps=FIVE_ARM_STEPS, eval_every_steps=3, patience_steps=3,
                         pretrain_fraction=0.5, arms=list(DEFAULT_ARMS))  # all five (the demo itself runs four)
    out = classifiers_stage(config, split_path, synthetic_manifest, progress=False)
    return config, out.results_path
