"""Issue 8 cause 4: the demo's classifier settings must not sit on a knife edge.

The demo once scored real 0.250 on a slower machine: epoch budgets gave the real arm ~4 steps per
epoch and early stopping ended it after ~28 optimizer steps, at chance. These tests run the demo
domain's SHIPPED cpu classifier settings (flows/configs/domains/demo.yaml) on the demo's phantom
data (200 per class, 64 px) with several seeds and require every arm that sees real images to be
clearly above chance on a DEVELOPMENT split (half of the held-out side, ``split.dev_fraction``): the
test half is never asserted on, so no test and no default leans on it (issue 18; lr 3e-4 was first
picked from held-out accuracy, so the check now reads only development scores, on a seed of its own). The synthetic set is a stand-in (fresh phantoms of another
seed, the demo's 40 per class), so this checks the classifier protocol, not the generator.
The default suite keeps one seed and the real arm (the one that failed): seed 4, one the lr was not
chosen on; -m slow runs three seeds and every arm.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from classifiers.stage import ENSEMBLE, classifiers_stage
from pipeline.config import load_domain_config
from pipeline.demo_data import PhantomSpec, make_demo_dataset
from pipeline.stages import ingest_stage, split_stage


CHANCE = 0.25  # four balanced classes
MIN_ACCURACY = 0.45  # "clearly above chance"; measured: benchmarks/results/demo-classifiers.md
MIN_FOLD_ACCURACY = 0.40  # no single fold model may be selected at chance either
SEES_REAL = ("real", "real+aug", "real+synthetic", "synthetic->real")


def make_synthetic_manifest(folder: Path, per_class: int, size: int, seed: int) -> Path:
    """The stand-in synthetic set: fresh phantoms (another seed) with a path/label/sha256 manifest."""
    root = make_demo_dataset(folder / "synthetic-images", PhantomSpec(per_class, size, "L", seed), progress=False)
    rows = [{"path": str(path.resolve()), "label": path.parent.name,
             "sha256": hashlib.sha256(path.read_bytes()).hexdigest()} for path in sorted(root.rglob("*.png"))]
    manifest = folder / "synthetic.parquet"
    pd.DataFrame(rows).to_parquet(manifest, index=False)
    return manifest


def demo_results(tmp: Path, seed: int, arms: list[str]) -> pd.DataFrame:
    config = load_domain_config("demo", "cpu", {"runs_root": str(tmp / "runs"), "seed": seed,
                                                "split": {"dev_fraction": 0.5},
                                                "classifiers": {"pretrained": False, "arms": arms}})
    data = make_demo_dataset(tmp / "data", PhantomSpec(200, 64, "L", seed), progress=False)
    split = split_stage(config, ingest_stage(config, data, progress=False).manifest_path)
    synthetic = (make_synthetic_manifest(tmp, config.synthesis.per_class, size=64, seed=seed + 1000)
                 if set(arms) - {"real", "real+aug"} else None)
    out = classifiers_stage(config, split.split_path, synthetic, progress=False)
    table = pd.read_parquet(out.results_path)
    folds = table[table["fold"] != ENSEMBLE]
    print(f"seed {seed}:", {arm: round(float(acc), 3) for arm, acc in
                            table[table["fold"] == ENSEMBLE].set_index("arm")["dev_accuracy"].items()},
          "steps", folds.groupby("arm")["steps_run"].agg(list).to_dict(),
          "best", folds.groupby("arm")["best_step"].agg(list).to_dict())
    return table


def check(table: pd.DataFrame, arms: tuple[str, ...]) -> None:
    ensemble = table[table["fold"] == ENSEMBLE].set_index("arm")
    folds = table[table["fold"] != ENSEMBLE]
    assert (folds["steps_run"] >= folds["min_steps"]).all()  # nothing ends before the floor
    assert not folds["time_budget_hit"].any()  # the safety net never decides a demo result
    for arm in arms:
        assert ensemble.loc[arm, "dev_accuracy"] >= MIN_ACCURACY, (arm, ensemble.loc[arm, "dev_accuracy"])
        fold_accuracy = folds[folds["arm"] == arm]["dev_accuracy"]
        assert (fold_accuracy >= MIN_FOLD_ACCURACY).all(), (arm, fold_accuracy.tolist())


def test_demo_real_arm_is_clearly_above_chance(tmp_path: Path) -> None:
    check(demo_results(tmp_path, 4, ["real"]), ("real",))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [4, 5, 6])
def test_demo_every_arm_that_sees_real_images_is_clearly_above_chance(tmp_path: Path, seed: int) -> None:
    check(demo_results(tmp_path, seed, ["synthetic", *SEES_REAL]), SEES_REAL)
