"""Helpers for the report tests: one small finished phantom run (tiny generator and classifiers, few LIME samples),
with a class named like an XSS payload and a quarantined file named like one, so every report test
also checks escaping."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.config import DomainConfig
from pipeline.demo_data import PhantomSpec, make_demo_dataset
from flows.run import RunRecord

EVIL_CLASS = "<script>alert(1)</script>"
EVIL_FILE = "<img src=x onerror=alert(2)>.png"
CLASSES = ["normal", "round", "ring", EVIL_CLASS]
TINY = {
    "data": {"class_names": CLASSES},
    "generator": {"image_size": 16, "block_out_channels": [32, 64], "attention_levels": [False, False],
                  "train_steps": 6, "batch_size": 8, "warmup_steps": 1, "num_train_timesteps": 100,
                  "checkpoint_every": 3},
    "synthesis": {"per_class": 6, "steps": 4, "batch_size": 24},
    "split": {"cv_folds": 2},
    "classifiers": {"architectures": ["resnet18"], "image_size": 32, "max_steps": 6, "min_steps": 6, "eval_every_steps": 3,
                    "pretrained": False, "batch_size": 16},
    "report": {"num_samples": 40, "batch_size": 40, "real_per_kind": 1, "synthetic_per_class": 1, "n_segments": 12,
               "bootstrap_resamples": 500},
}


@dataclass
class FinishedRun:
    config: DomainConfig
    record: RunRecord
    runs_root: Path

    @property
    def run_dir(self) -> Path:
        return self.record.run_dir

    @property
    def html_path(self) -> Path:
        return self.record.run_dir / "report.html"


def make_manifest(root: Path) -> Path:
    """The phantom set as a CSV manifest: 'elongated' relabelled with a script tag, plus one empty file."""
    data = make_demo_dataset(root / "images", PhantomSpec(26, 32, "L", 5), progress=False)
    rows = []
    for path in sorted(Path(data).glob("*/*.png")):
        label = path.parent.name
        rows.append({"path": str(path), "label": EVIL_CLASS if label == "elongated" else label})
    evil = root / EVIL_FILE
    evil.write_bytes(b"")
    rows.append({"path": str(evil), "label": "normal"})
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest
