"""Helpers for the classifier tests: a phantom dataset, its persisted split, a phantom synthetic set."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd

from pipeline.config import DomainConfig, load_domain_config
from pipeline.demo_data import PhantomSpec, make_demo_dataset

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network here: hub lookups must fail fast


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


def make_synthetic_manifest(folder: Path, per_class: int, size: int = 64, seed: int = 99) -> Path:
    """A stand-in for the generator's output: fresh phantoms (another seed) with a path/label/sha256 manifest."""
    root = make_demo_dataset(folder / "synthetic-images", PhantomSpec(per_class, size, "L", seed), progress=False)
    rows = []
    for path in sorted(root.rglob("*.png")):
        rows.append({"path": str(path.resolve()), "label": path.parent.name,
                     "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    manifest = folder / "synthetic.parquet"
    pd.DataFrame(rows).to_parquet(manifest, index=False)
    return manifest
