"""Helpers for the classifier tests: a phantom dataset and its persisted split."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.config import DomainConfig, load_domain_config
from pipeline.demo_data import PhantomSpec, make_demo_dataset

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network here: hub lookups must fail fast

FIVE_ARM_STEPS = 6  # the five_arms fixture: every arm, every fold runs exactly this many optimizer steps


def demo_config(tmp: Path, folds: int | None = None, **classifiers: object) -> DomainConfig:
    """The demo domain's cpu profile with a temporary run store, ``folds`` (split.cv_folds) and classifier
    overrides."""
    overrides: dict[str, object] = {"runs_root": str(tmp / "runs"), "classifiers": {"pretrained": False, **classifiers}}
    if folds is not None:
        overrides["split"] = {"cv_folds": folds}
    return load_domain_config("demo", "cpu", overrides)


def make_split(config: DomainConfig, per_class: int, size: int = 64, seed: int = 0) -> Path:
    from pipeline.stages import ingest_stage, split_stage

    data = make_demo_dataset(Path(config.runs_root) / "data", PhantomSpec(per_class, size, "L", seed), progress=False)
    ingest = ingest_stage(config, data, progress=False)
    return split_stage(config, ingest.manifest_path).split_path
