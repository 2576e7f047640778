"""The sample grid and the protocol benchmark's table logic (no training: fixed inputs)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.config import load_domain_config
from reports.grids import LABEL_WIDTH, class_grid

ROOT = Path(__file__).resolve().parents[1]


def load_protocol_module():
    spec = importlib.util.spec_from_file_location("protocol_benchmark", ROOT / "benchmarks" / "protocol.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_class_grid_has_one_labelled_row_per_key(tmp_path: Path) -> None:
    paths = []
    for i in range(3):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((20, 30), 50 * i, np.uint8)).save(path)
        paths.append(path)
    target = class_grid({"a / real": paths, "a / synth": paths[:2]}, tmp_path / "grid.png", tile=16, title="t")
    image = Image.open(target)
    assert image.size == (LABEL_WIDTH + 3 * 16, 24 + 2 * 16)
    with pytest.raises(ValueError):
        class_grid({}, tmp_path / "empty.png")


def test_aggregate_reports_fold_mean_std_ensemble_and_the_study_number() -> None:
    protocol = load_protocol_module()
    rows = []
    for arm in ("synthetic", "real"):
        for fold, accuracy in (("0", 0.6), ("1", 0.8), ("ensemble", 0.75)):
            rows.append({"arm": arm, "architecture": "vgg19", "fold": fold, "test_accuracy": accuracy,
                         "precision_macro": accuracy, "recall_macro": accuracy, "f1_macro": accuracy,
                         "epochs_run": None if fold == "ensemble" else 3, "time_budget_hit": False})
    table = protocol.aggregate(pd.DataFrame(rows), "brain-mri").set_index("arm")
    assert table.loc["real", "test_accuracy_mean"] == pytest.approx(0.7)
    assert table.loc["real", "test_accuracy_std"] == pytest.approx(np.std([0.6, 0.8], ddof=1))
    assert table.loc["real", "test_accuracy_ensemble"] == pytest.approx(0.75)
    assert table.loc["synthetic", "study_accuracy"] == pytest.approx(0.8646)  # MISSION.md Table 2, VGG-19
    assert pd.isna(table.loc["real", "study_accuracy"])  # the study only reports the synthetic arm
    text = protocol.markdown_table(table.reset_index(), "brain-mri")
    assert "| synthetic | vgg19 | 2 | 0.700 +- 0.141 | 0.750 |" in text and "86.46%" in text


def test_budgets_resolve_and_list_their_departures_from_the_study() -> None:
    protocol = load_protocol_module()
    quick = protocol.budget_config("brain-mri", "cpu-quick", "/tmp/x")
    settings = {row["setting"] for row in protocol.departures_from_study(quick)}
    assert {"generator.image_size", "split.cv_folds", "synthesis.per_class"} <= settings
    assert protocol.departures_from_study(protocol.budget_config("brain-mri", "gpu", None)) == []
    assert load_domain_config("brain-mri", "gpu").split.cv_folds == 5
    with pytest.raises(Exception, match="unknown budget 'tiny'"):
        protocol.budget_config("brain-mri", "tiny", None)
