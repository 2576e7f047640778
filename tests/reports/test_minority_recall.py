"""The report's recall of the smallest classes (issue 21): the classes a balance arm is meant to help."""

from __future__ import annotations

import pandas as pd

from reports.sections.classifiers import minority_recall


def _results(supports: dict[str, int]) -> pd.DataFrame:
    rows = []
    for arm, recalls in (("real", {"big": 0.9, "mid": 0.5, "tiny": 0.2}), ("balance", {"big": 0.85, "mid": 0.6, "tiny": 0.4})):
        for fold in ("0", "ensemble"):
            rows.append({"arm": arm, "architecture": "resnet18", "fold": fold, "val_loss": 0.5 if fold == "0" else None,
                         "val_accuracy": 0.5, **{f"support[{c}]": n for c, n in supports.items()},
                         **{f"recall[{c}]": v for c, v in recalls.items()}})
    return pd.DataFrame(rows)


def test_the_smallest_classes_recall_per_arm_in_size_order() -> None:
    table = minority_recall(_results({"big": 300, "mid": 40, "tiny": 10}))
    assert table["classes"] == ["tiny (10 held-out images)", "mid (40 held-out images)"]
    rows = {r["arm"]: r["recall"] for r in table["rows"]}
    assert rows == {"real": ["20.0%", "50.0%"], "balance": ["40.0%", "60.0%"]}


def test_a_balanced_test_set_has_no_minority_table() -> None:
    assert minority_recall(_results({"big": 30, "mid": 30, "tiny": 30})) == {}
