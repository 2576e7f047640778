"""The sample grid and the protocol benchmark's table logic (no training: fixed inputs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.config import load_domain_config
from reports import protocol_table
from reports.grids import LABEL_WIDTH, class_grid


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
    rows = []
    for arm in ("synthetic", "real"):
        for fold, accuracy in (("0", 0.6), ("1", 0.8), ("ensemble", 0.75)):
            rows.append({"arm": arm, "architecture": "vgg19", "fold": fold, "test_accuracy": accuracy,
                         "precision_macro": accuracy, "recall_macro": accuracy, "f1_macro": accuracy,
                         "epochs_run": None if fold == "ensemble" else 3, "time_budget_hit": False})
    table = protocol_table.aggregate(pd.DataFrame(rows), "brain-mri").set_index("arm")
    assert table.loc["real", "test_accuracy_mean"] == pytest.approx(0.7)
    assert table.loc["real", "test_accuracy_std"] == pytest.approx(np.std([0.6, 0.8], ddof=1))
    assert table.loc["real", "test_accuracy_ensemble"] == pytest.approx(0.75)
    assert table.loc["synthetic", "study_accuracy"] == pytest.approx(0.8646)  # MISSION.md Table 2, VGG-19
    assert pd.isna(table.loc["real", "study_accuracy"])  # the study only reports the synthetic arm
    text = protocol_table.markdown_table(table.reset_index(), "brain-mri")
    assert "| synthetic | vgg19 | 2 | 0.700 +- 0.141 | 0.750 |" in text and "86.46%" in text


def test_budgets_resolve_and_list_their_departures_from_the_study() -> None:
    quick = load_domain_config("brain-mri", budget="cpu-quick", overrides={"runs_root": "/tmp/x"})
    departures = {row["setting"]: row for row in protocol_table.departures_from_study(quick)}
    assert {"generator.image_size", "split.cv_folds", "synthesis.per_class"} <= set(departures)
    assert departures["split.cv_folds"]["this run"] == 3 and departures["split.cv_folds"]["study (gpu profile)"] == 5
    assert "runs_root" not in departures  # only the protocol's sections are compared
    assert protocol_table.departures_from_study(load_domain_config("brain-mri", budget="gpu")) == []
