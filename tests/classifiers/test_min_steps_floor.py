"""Early stopping waits for ``min_steps`` in every selecting phase, synthetic->real's real fine-tune included.

The real training loop and the real EarlyStopping; only the validation signal is fixed (a loss that gets
worse at every evaluation), so each phase stops at the first step the floor and the patience allow.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from classifiers.stage import classifiers_stage
from classifiers.train import Trainer
from pipeline.config import DomainConfig
from tests.classifiers.test_budget_and_validation import fit_records

from clf_helpers import demo_config


def test_the_real_fine_tune_has_its_own_floor(demo_split: tuple[DomainConfig, Path], synthetic_manifest: Path,
                                              monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(Trainer, "_evaluate", lambda self, images, labels: (1.0 + 0.01 * self.step, 0.5))
    _, split_path = demo_split
    config = demo_config(tmp_path, architectures=["resnet18"], arms=["real", "synthetic->real"], image_size=32,
                         folds=2, batch_size=16, max_steps=12, min_steps=8, patience_steps=1, eval_every_steps=1,
                         pretrain_fraction=0.5)
    out = classifiers_stage(config, split_path, synthetic_manifest, progress=False)
    for metrics, record in fit_records(out.results_path):
        phases = {p["name"]: p for p in record["phases"]}
        assert metrics["stopped_reason"] == "early_stopping", metrics["arm"]
        if metrics["arm"] == "real":
            assert phases["train"]["steps_run"] == 8  # min_steps, then patience is already spent
        else:  # 6 pretraining steps, then 8 * 6 / 12 = 4 real steps before stopping may end the fit
            assert phases["pretrain"]["steps_run"] == 6
            assert phases["finetune"]["steps_run"] == 4
