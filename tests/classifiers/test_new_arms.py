"""The two arms a data team needs beyond the study's (issue 21): real+aug+synthetic and balance.

Oracles are counted by hand on an imbalanced toy sample (a: 6, b: 3, c: 1 real images) with a synthetic
set of 4 images per class written in an order that is not the canonical one.
"""

from __future__ import annotations

import pandas as pd
import pytest

from classifiers.data import AUGMENTED, arm_manifest, balancing_rows
from pipeline.config import DEFAULT_ARMS, SYNTHETIC_ARMS, DomainConfig
from pipeline.errors import DataError
from pipeline.split import Split
from reports.sections.answer import comparisons_shown

REAL = {"a": 6, "b": 3, "c": 1}


def _split() -> Split:
    rows = [{"path": f"/r/{c}{i}.png", "sha256": f"r{c}{i}", "label": c, "relpath": f"{c}{i}", "split": "train"}
            for c, n in REAL.items() for i in range(n)]
    rows += [{"path": "/t/x.png", "sha256": "t0", "label": "a", "relpath": "t0", "split": "test"}]
    return Split(pd.DataFrame(rows), "h", 0, 0.2, False)


def _synthetic(per_class: int = 4) -> pd.DataFrame:
    rows = [{"path": f"/s/{c}{i}.png", "sha256": f"s{c}{i:02d}", "label": c, "index": i}
            for i in reversed(range(per_class)) for c in sorted(REAL, reverse=True)]  # not in canonical order
    return pd.DataFrame(rows)


def test_balance_tops_up_each_smaller_class_to_the_largest_with_its_first_synthetic_images() -> None:
    table = arm_manifest("balance", _split(), _synthetic())
    counts = table["label"].value_counts().to_dict()
    assert counts == {"a": 6, "b": 6, "c": 5}  # c: 1 real + all 4 synthetic (deficit 5 > the 4 there are)
    synthetic = table[table["source"] == "synthetic"]
    assert set(synthetic["label"]) == {"b", "c"}  # the largest class gets none
    assert sorted(synthetic[synthetic["label"] == "b"]["sha256"]) == ["sb00", "sb01", "sb02"]  # the first three
    assert (table["source"] == "real").sum() == sum(REAL.values())
    assert "t0" not in set(table["sha256"])


def test_balancing_an_already_balanced_sample_adds_nothing() -> None:
    real = pd.DataFrame({"label": ["a", "b"]})
    synthetic = pd.DataFrame({"label": ["a", "b", "a"], "sha256": ["1", "2", "3"]})
    assert balancing_rows(synthetic, real).empty


def test_real_aug_synthetic_holds_every_real_and_synthetic_image_and_is_augmented() -> None:
    table = arm_manifest("real+aug+synthetic", _split(), _synthetic())
    assert (table["source"] == "real").sum() == 10 and (table["source"] == "synthetic").sum() == 12
    assert "real+aug+synthetic" in AUGMENTED and "real+synthetic" not in AUGMENTED
    with pytest.raises(DataError, match="needs a synthetic manifest"):
        arm_manifest("balance", _split(), None)


def test_new_arms_are_opt_in_and_compared_like_every_synthetic_arm() -> None:
    assert DomainConfig.model_validate({"name": "x"}).classifiers.arms == list(DEFAULT_ARMS)
    assert "balance" not in DEFAULT_ARMS and "real+aug+synthetic" not in DEFAULT_ARMS
    arms = ["real", "real+aug", "balance", "real+aug+synthetic"]
    assert comparisons_shown(arms) == [("balance", "real"), ("real+aug+synthetic", "real"),
                                       ("balance", "real+aug"), ("real+aug+synthetic", "real+aug")]
    assert set(SYNTHETIC_ARMS) >= {"balance", "real+aug+synthetic"}
