"""The diversity ablation's bookkeeping: each variant changes exactly its one setting against the base, and the
decisions pair each variant with its own base on the development images, Holm-corrected across all of them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

benchmark = pytest.importorskip("benchmarks.ablation_diversity")


def _leaves(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("name", [v for v in benchmark.VARIANTS if v != "base"])
def test_each_variant_changes_only_its_override(name: str, tmp_path: Path) -> None:
    base = _leaves(benchmark.variant_config("brain-mri", "base", str(tmp_path)).to_dict())
    variant = _leaves(benchmark.variant_config("brain-mri", name, str(tmp_path)).to_dict())
    changed = {k for k in set(base) | set(variant) if base.get(k) != variant.get(k)}
    assert changed == set(_leaves(benchmark.VARIANTS[name][1]))
    for key, value in _leaves(benchmark.VARIANTS[name][1]).items():
        assert variant[key] == value


def test_the_base_is_row_ten_with_every_arm_on_a_development_split(tmp_path: Path) -> None:
    config = benchmark.variant_config("covid-ct", "base", str(tmp_path))
    assert list(config.classifiers.arms) == benchmark.ARMS
    assert config.split.dev_fraction == benchmark.DEV_FRACTION > 0
    assert config.classifiers.select_on == "val_accuracy"  # row 10's change
    assert config.generator.train_steps == 2000  # row 9's lineage


def _prediction_sets(n: int = 200) -> dict[str, dict[str, Any]]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, n)
    wrong = (labels + 1) % 4
    base = {arm: np.where(np.arange(n) < 120, labels, wrong) for arm in benchmark.SYNTHETIC_USING}
    better = dict(base, synthetic=np.where(np.arange(n) < 170, labels, wrong))  # +50 images, none lost
    # seed 2's base is the better one, so pairing filter-seed2 with seed 1's base would show +25 points
    sets = {"base": base, "filter": better, "x2": dict(base), "base-seed2": better, "filter-seed2": dict(better)}
    return {run: {"labels": labels, "clusters": np.arange(n), "preds": preds} for run, preds in sets.items()}


def test_decisions_pair_each_variant_with_its_own_base_and_correct_across_all(monkeypatch: pytest.MonkeyPatch) -> None:
    sets = _prediction_sets()
    monkeypatch.setattr(benchmark, "set_predictions", lambda run_dir, set_name: sets[run_dir] if set_name == "dev"
                        else pytest.fail("the diversity ablation read the test images"))
    payload = {"variants": {key: {"variant": key.split("-")[0], "run_dir": key, "seed": 2 if "seed" in key else 1}
                            for key in sets}}
    payload["variants"]["cads-seed3"] = {"variant": "cads", "run_dir": "missing", "seed": 3}  # no base-seed3: skipped
    found = benchmark.decisions(payload, resamples=200)
    arms = len(benchmark.SYNTHETIC_USING)
    assert len(found) == 3 * arms  # filter, x2, filter-seed2; each synthetic-using arm
    assert {d["comparisons"] for d in found} == {3 * arms}
    by = {(d["variant"], d["arm"]): d for d in found}
    gain = by[("filter", "synthetic")]
    assert gain["difference"] == pytest.approx(0.25)
    assert gain["p_adjusted"] >= gain["p_value"] and gain["p_adjusted"] < 0.05
    # filter-seed2 is compared with base-seed2 (identical predictions), not with base
    assert by[("filter-seed2", "synthetic")]["difference"] == 0.0
    assert by[("filter-seed2", "synthetic")]["p_adjusted"] == 1.0
    assert by[("x2", "real+synthetic")]["difference"] == 0.0


def test_decisions_refuse_a_pair_scored_on_different_images(monkeypatch: pytest.MonkeyPatch) -> None:
    sets = _prediction_sets()
    sets["x2"] = dict(sets["x2"], labels=sets["x2"]["labels"][::-1].copy())
    monkeypatch.setattr(benchmark, "set_predictions", lambda run_dir, set_name: sets[run_dir])
    payload = {"variants": {"base": {"variant": "base", "run_dir": "base", "seed": 1},
                            "x2": {"variant": "x2", "run_dir": "x2", "seed": 1}}}
    with pytest.raises(ValueError, match="different development images"):
        benchmark.decisions(payload, resamples=50)


def test_markdown_shows_a_dash_for_an_arm_a_variant_did_not_train() -> None:
    payload = {"commands": ["python benchmarks/ablation_diversity.py --variants base"],
               "variants": {"base": {"change": "row 10", "dev": {"real": {"accuracy": 0.8125}}, "quality": {},
                                     "compute_minutes": 3.0}}, "decisions": []}
    table = benchmark.markdown("brain-mri", payload)
    row = next(line for line in table.splitlines() if line.startswith("| base |"))
    assert row.count(" - ") == len(benchmark.ARMS) - 1 + 2 and "0.812" in row
    assert "- none yet" in table


def test_unknown_variant_and_missing_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        benchmark.main(["--domain", "demo", "--data", str(tmp_path), "--runs-root", str(tmp_path), "--variants", "nope"])
    assert "unknown variant(s) nope" in capsys.readouterr().err
    assert benchmark.main(["--domain", "demo", "--data", str(tmp_path / "absent"), "--runs-root", str(tmp_path)]) == 0
    assert "skipped: dataset not found" in capsys.readouterr().out


def test_each_variant_gets_a_grid_of_its_own_synthetic_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pandas as pd
    from PIL import Image

    def png(name: str, value: int) -> str:
        path = tmp_path / "images" / f"{name}.png"
        path.parent.mkdir(exist_ok=True)
        Image.new("L", (32, 32), value).save(path)
        return str(path)

    real = [{"split": "train", "label": label, "sha256": f"{label}{i}", "path": png(f"r-{label}{i}", 0)}
            for label in ("a", "b") for i in range(3)]
    held_out = [{"split": "test", "label": "a", "sha256": "t", "path": png("t", 128)}]
    synthetic = [{"label": label, "path": png(f"s-{label}{i}", 255), "mode": "L"} for label in ("a", "b") for i in range(5)]
    run_dir = tmp_path / "runs" / "demo" / "history" / "20261207T000000Z"
    run_dir.mkdir(parents=True)
    pd.DataFrame(real + held_out).to_parquet(tmp_path / "split.parquet")
    pd.DataFrame(synthetic).to_parquet(tmp_path / "synthetic.parquet")
    (run_dir / "run.json").write_text(json.dumps({"meta": {}, "stages": {
        "split": {"split": str(tmp_path / "split.parquet")}, "synthesis": {"manifest": str(tmp_path / "synthetic.parquet")}}}))
    monkeypatch.setattr(benchmark, "RESULTS_DIR", tmp_path / "results")
    target = benchmark.grid_path("demo", "cads-seed2")
    benchmark.run_grid(run_dir, target, "demo cads", per_row=4)
    grid = Image.open(target).convert("L")
    assert grid.size == (120 + 4 * 64, 24 + 4 * 64)  # a real and a synthetic row per class, 4 tiles each
    for row, value in enumerate((0, 255, 0, 255)):  # a / real, a / synth, b / real, b / synth; never a test image
        assert grid.getpixel((120 + 2 * 64 + 32, 24 + row * 64 + 32)) == value  # the third tile
    payload = {"commands": [], "decisions": [], "variants": {
        key: {"change": "-", "dev": {}, "quality": {}, "compute_minutes": 1.0} for key in ("base", "cads-seed2")}}
    table = benchmark.markdown("demo", payload)
    assert "- cads-seed2: diversity-demo-cads-seed2-grid.png" in table and "base: diversity" not in table


def test_dev_recall_reads_the_ensemble_rows_per_class() -> None:
    import pandas as pd

    results = pd.DataFrame([
        {"arm": "real", "fold": "0", "dev_recall[a]": 0.1, "dev_recall[b]": 0.2},
        {"arm": "real", "fold": "ensemble", "dev_recall[a]": 0.75, "dev_recall[b]": 0.5},
        {"arm": "balance", "fold": "ensemble", "dev_recall[a]": 0.8, "dev_recall[b]": 0.9}])
    assert benchmark.dev_recall(results) == {"real": {"a": 0.75, "b": 0.5}, "balance": {"a": 0.8, "b": 0.9}}


def test_real_counts_count_the_training_side_only(tmp_path: Path) -> None:
    import pandas as pd

    from pipeline.store import atomic_write_table

    table = pd.DataFrame({"label": ["a", "a", "b", "b", "b", "a"], "split": ["train", "train", "train", "test", "dev", "test"]})
    atomic_write_table(tmp_path / "split.parquet", table)
    assert benchmark.real_counts(str(tmp_path / "split.parquet")) == {"a": 2, "b": 1}


def _row(recall: dict[str, dict[str, float]], counts: dict[str, int], **extra: Any) -> dict[str, Any]:
    return {"change": "c", "dev": {}, "quality": {}, "compute_minutes": 1.0, "dev_recall": recall,
            "real_counts": counts, **extra}


def test_markdown_reports_the_smallest_class_recall_memorisation_and_what_the_filter_dropped() -> None:
    recall = {"real": {"big": 0.9, "small": 0.41}, "balance": {"big": 0.88, "small": 0.63}}
    quality = {"precision": 0.8, "recall": 0.5, "precision_real_vs_real": 0.9, "recall_real_vs_real": 0.9,
               "label_agreement": 0.9, "flagged_fraction": 0.0125, "copy_fraction": 0.0, "nn_ratio_median": 0.912}
    payload = {"commands": [], "decisions": [], "variants": {
        "base": _row(recall, {"big": 300, "small": 120}),
        "filter": _row(recall, {"big": 300, "small": 120}, quality=quality,
                       filter={"small": {"generated": 130, "dropped": 10, "kept": 120, "wanted": 120}})}}
    text = benchmark.markdown("d", payload)
    smallest = [line for line in text.splitlines() if line.startswith("| base | small (120)")]
    columns = ["real", "balance"]
    assert smallest and all(f"{recall[a]['small']:.3f}" in smallest[0] for a in columns)
    cells = [cell.strip() for cell in smallest[0].strip(" |").split("|")]
    assert cells[2 + benchmark.ARMS.index("balance")] == "0.630" and cells[2 + benchmark.ARMS.index("synthetic")] == "-"
    assert "| filter | 0.013 | 0.000 | 0.912 |" in text
    assert "- filter: small 130 / 10 / 120" in text


def test_quality_of_reads_memorisation_from_the_quality_report(tmp_path: Path) -> None:
    report = {"metrics": [{"extractor": "domain", "metric": "recall", "class": "all", "synthetic": 0.41, "reference": 0.9}],
              "label_consistency": {"overall_agreement": 0.875},
              "memorisation": {"flagged_fraction": 0.02, "spaces": {
                  "pixel": {"copy_fraction": 0.5, "nn_ratio_median": 0.2},
                  "feature": {"copy_fraction": 0.01, "nn_ratio_median": 0.93}}}}
    (tmp_path / "quality.json").write_text(json.dumps(report))
    record = type("Record", (), {"stages": {"quality": {"report": str(tmp_path / "quality.json")}}})()
    out = benchmark.quality_of(record)
    assert out["recall"] == 0.41 and out["label_agreement"] == 0.875
    assert (out["flagged_fraction"], out["copy_fraction"], out["nn_ratio_median"]) == (0.02, 0.01, 0.93)


def test_synthetic_arms_are_compared_with_real_aug_of_the_same_variant_on_development_images(
        monkeypatch: pytest.MonkeyPatch) -> None:
    n = 200
    labels = np.arange(n) % 4
    wrong = (labels + 1) % 4
    aug = np.where(np.arange(n) < 140, labels, wrong)
    run = {"labels": labels, "clusters": np.arange(n), "preds": {
        "real+aug": aug, "synthetic": np.where(np.arange(n) < 100, labels, wrong),
        "real+aug+synthetic": np.where(np.arange(n) < 180, labels, wrong)}}
    no_aug = {"labels": labels, "clusters": np.arange(n), "preds": {"synthetic": aug}}  # no real+aug arm: skipped
    runs = {"base": run, "x2": no_aug}
    monkeypatch.setattr(benchmark, "set_predictions", lambda run_dir, set_name: runs[run_dir] if set_name == "dev"
                        else pytest.fail("read the test images"))
    payload = {"variants": {key: {"variant": key, "run_dir": key, "seed": 1} for key in runs}}
    found = {d["arm"]: d for d in benchmark.against_classic_augmentation(payload, resamples=200)}
    assert set(found) == {"synthetic", "real+aug+synthetic"}
    assert found["real+aug+synthetic"]["difference"] == pytest.approx(0.2)  # challenger minus real+aug
    assert found["synthetic"]["difference"] == pytest.approx(-0.2)
    assert {d["comparisons"] for d in found.values()} == {2}
    assert "base: real+aug+synthetic vs real+aug: +20.0 points" in found["real+aug+synthetic"]["words"]
