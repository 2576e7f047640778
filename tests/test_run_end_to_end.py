"""The whole chain through ``run_domain`` (what `synth-augment run`, the protocol benchmark and the
flow call): every stage runs once, its outputs connect, and a second run reuses every stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.cli import main
from pipeline.config import load_domain_config
from pipeline.demo_data import PhantomSpec, make_demo_dataset
from flows.run import ALL_STAGES, run_domain, stages_to_run
from pipeline.store import read_json

TINY = {
    "generator": {"image_size": 16, "block_out_channels": [32, 64], "attention_levels": [False, False],
                  "train_steps": 6, "batch_size": 8, "warmup_steps": 1, "num_train_timesteps": 100,
                  "checkpoint_every": 3},
    "synthesis": {"per_class": 6, "steps": 4, "batch_size": 24},
    "split": {"cv_folds": 2},
    "classifiers": {"architectures": ["resnet18"], "arms": ["synthetic", "real", "real+aug", "real+synthetic",
                                                            "synthetic->real"],
                    "image_size": 32, "max_steps": 2, "min_steps": 2,
                    "eval_every_steps": 1, "pretrained": False, "batch_size": 16},
    "report": {"num_samples": 20, "real_per_kind": 1, "synthetic_per_class": 1, "n_segments": 8},
}


def test_run_domain_chains_every_stage_and_reuses_them(tmp_path: Path) -> None:
    data = make_demo_dataset(tmp_path / "data", PhantomSpec(26, 32, "L", 3), progress=False)
    config = load_domain_config("demo", "cpu", {"runs_root": str(tmp_path / "runs"), **TINY})
    first = run_domain(config, data, progress=False)
    assert list(first.stages) == [name for name in ALL_STAGES if name != "selection"]  # synthesis.select is off
    assert not any(info["cached"] for info in first.stages.values())
    record = read_json(first.run_dir / "run.json")
    assert all(record["stages"][name]["peak_rss_mb"] > 0 for name in first.stages)

    synthetic = pd.read_parquet(first.stages["synthesis"]["manifest"])
    assert synthetic["label"].value_counts().to_dict() == {c: 6 for c in ("normal", "round", "ring", "elongated")}
    results = pd.read_parquet(first.stages["classifiers"]["results"])
    assert set(results["arm"]) == {"synthetic", "real", "real+aug", "real+synthetic", "synthetic->real"}
    assert set(results["fold"].astype(str)) == {"0", "1", "ensemble"}
    check_results_match_stored_fits(results, Path(first.stages["classifiers"]["results"]).parent,
                                    Path(config.runs_root) / "demo" / "classifier-fits", config.data.class_names)

    assert (first.run_dir / "report.html").is_file()

    second = run_domain(config, data, progress=False)
    assert all(info["cached"] for name, info in second.stages.items() if name != "report"), second.stages
    assert second.stages["explain"]["key"] == first.stages["explain"]["key"]
    assert second.stages["classifiers"]["key"] == first.stages["classifiers"]["key"]


def check_results_match_stored_fits(results: pd.DataFrame, stage_dir: Path, fits_dir: Path,
                                    class_names: list[str]) -> None:
    """Every fold row is its fit's stored metrics; every ensemble row is recomputed from the stored
    per-fold test probabilities against the held-out labels (a wrong join or mean shows here)."""
    test = pd.read_parquet(stage_dir / "test_manifest.parquet")
    y_test = np.array([class_names.index(label) for label in test["label"].astype(str)])
    for row in results.itertuples():
        keys = row.fit_key.split(",")
        if row.fold != "ensemble":
            stored = read_json(fits_dir / row.fit_key / "metrics.json")
            assert (stored["arm"], stored["fold"], stored["val_loss"]) == (row.arm, row.fold, row.val_loss)
            assert "test_accuracy" not in stored  # a fit never reads the held-out set; scoring does
            continue
        assert len(keys) == 2 and row.n_test == len(y_test)
        probs = np.mean([np.load(stage_dir / "scores" / "test" / f"{key}.npy") for key in keys], axis=0)
        assert probs.shape == (len(y_test), len(class_names))
        assert row.test_accuracy == pytest.approx(float((probs.argmax(1) == y_test).mean()))


def test_cli_run_prints_every_stage_and_the_results(tmp_path: Path, capsys) -> None:
    data = make_demo_dataset(tmp_path / "data", PhantomSpec(26, 32, "L", 4), progress=False)
    sets = [f"--set={section}.{key}={value}" for section, values in TINY.items() for key, value in values.items()]
    args = ["run", "--domain", "demo", "--data", str(data), "--runs-root", str(tmp_path / "runs"), "--quiet", *sets]
    assert main([a.replace("'", "") for a in args]) == 0
    out = capsys.readouterr().out
    config = load_domain_config("demo", "cpu", {"runs_root": str(tmp_path / "runs"), **TINY})
    for stage in stages_to_run(config, ALL_STAGES[-1]):
        assert f"[{stage.name}] done" in out
    assert "held-out real test accuracy" in out and "synthetic/resnet18" in out and "results table:" in out
    assert out.strip().splitlines()[-1].startswith("report: ") and out.strip().endswith("report.html")


@pytest.mark.parametrize(("select", "quality", "until", "reference", "filter"), [
    (False, True, "synthesis", False, "off"),   # nothing before synthesis judges with it
    (True, True, "synthesis", True, "off"),     # selection does
    (False, True, "synthesis", True, "reference"),  # the synthesis filter does
    (False, True, "quality", True, "off"),      # the quality stage does
    (False, False, "report", False, "off"),     # nothing does
    (True, False, "generator", False, "reference"),  # `--until generator` never trains it
])
def test_the_reference_stage_runs_only_for_a_stage_that_uses_it(tmp_path: Path, select: bool, quality: bool,
                                                                 until: str, reference: bool, filter: str) -> None:
    config = load_domain_config("demo", "cpu", {"runs_root": str(tmp_path),
                                                "synthesis": {"select": select, "filter": filter},
                                                "quality": {"enabled": quality}})
    names = [stage.name for stage in stages_to_run(config, until)]
    assert ("reference" in names) is reference
    assert names[-1] == until or (until == "quality" and not quality)
