"""The time-to-useful benchmark end to end at toy scale: one point per kept checkpoint, dev accuracy only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.demo_data import PhantomSpec, make_demo_dataset

benchmark = pytest.importorskip("benchmarks.time_to_useful")


def test_one_point_per_checkpoint_scored_on_the_development_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(benchmark, "RESULTS", tmp_path / "results")
    data = make_demo_dataset(tmp_path / "data", PhantomSpec(per_class=16, size=32, seed=3), progress=False)
    tiny = ["generator.image_size=16", "generator.block_out_channels=[16, 32]", "generator.attention_levels=[false, false]",
            "generator.batch_size=8", "generator.warmup_steps=1", "synthesis.steps=2", "split.cv_folds=2",
            "classifiers.image_size=16", "classifiers.max_steps=2", "classifiers.min_steps=2", "classifiers.batch_size=8",
            "classifiers.pretrained=false", "quality.enabled=false"]
    argv = ["--domain", "demo", "--data", str(data), "--runs-root", str(tmp_path / "runs"), "--every", "2",
            "--steps", "4", "--per-class", "3", "--quiet", *[f"--set={item}" for item in tiny]]
    assert benchmark.main(argv) == 0
    payload = json.loads((tmp_path / "results" / "time-to-useful-demo.json").read_text())
    assert [p["step"] for p in payload["points"]] == [2, 4]
    assert all(0.0 <= p["dev_accuracy"] <= 1.0 and p["generator_minutes"] >= 0 for p in payload["points"])
    assert "| 4 |" in (tmp_path / "results" / "time-to-useful-demo.md").read_text()
    # a second run finds every stage stored: same points
    assert benchmark.main(argv) == 0
    again = json.loads((tmp_path / "results" / "time-to-useful-demo.json").read_text())
    assert again["points"] == payload["points"]
