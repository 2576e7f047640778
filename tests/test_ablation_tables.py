"""benchmarks/ablation.py: it imports on the supported Pythons, its committed tables are what its code renders
from its committed JSON, and the row that says "cpu-medium budget" runs the shipped cpu-medium settings."""

from __future__ import annotations

import json

import pytest

from benchmarks import ablation
from pipeline.config import load_domain_config

DOMAINS = ("brain-mri", "covid-ct")


@pytest.mark.parametrize("domain", DOMAINS)
def test_committed_markdown_is_the_rendering_of_the_committed_json(domain: str) -> None:
    payload = json.loads((ablation.RESULTS_DIR / f"{domain}.json").read_text())
    committed = (ablation.RESULTS_DIR / f"{domain}.md").read_text()
    assert ablation.markdown(domain, payload) == committed
    for row in payload["rows"].values():  # every row names each arm's held-out ensemble accuracy
        assert {"real", "synthetic"} <= set(row["arms"]) and 0.0 <= row["arms"]["real"]["accuracy"] <= 1.0


def test_paired_sentences_lose_the_architecture_name_only() -> None:
    payload = {"rows": {"1": {"row": 1, "name": "r", "arms": {}, "signal": {"cas": 0.5, "gap": 0.1},
                              "compute_minutes": 1.0,
                              "paired": ["real+synthetic (resnet18) vs real-only (resnet18): +1.7 points (p = 0.011)",
                                         "synthetic (mobilenetv2_100) vs real-only: -3.0 points"]}},
               "commands": [], "shrinks": ""}
    text = ablation.markdown("d", payload)
    assert "- row 1: real+synthetic vs real-only: +1.7 points (p = 0.011); synthetic vs real-only: -3.0 points" in text


@pytest.mark.parametrize("domain", DOMAINS)
def test_cpu_medium_rows_run_the_shipped_cpu_medium_settings(domain: str, tmp_path) -> None:
    """Row 9 is the budget with model selection on validation loss; row 10, the last, is the budget as shipped."""
    number = next(i for i, (name, _) in enumerate(ablation.ROWS) if name.startswith("cpu-medium budget"))
    assert ablation.row_config(domain, number, str(tmp_path)).classifiers.select_on == "val_loss"
    row = ablation.row_config(domain, len(ablation.ROWS) - 1, str(tmp_path))
    shipped = load_domain_config(domain, budget="cpu-medium")
    for field in ("train_steps", "checkpoint_every", "image_size", "prediction_type", "snr_gamma"):
        assert getattr(row.generator, field) == getattr(shipped.generator, field), field
    for field in ("per_class", "steps", "select", "select_per_class", "guidance_candidates", "strength_candidates",
                  "checkpoint_candidates", "sampler"):
        assert getattr(row.synthesis, field) == getattr(shipped.synthesis, field), field
    for field in ("budget", "max_steps", "min_steps", "eval_every_steps", "patience_steps", "batch_size",
                  "learning_rate", "architectures", "image_size", "select_on"):
        assert getattr(row.classifiers, field) == getattr(shipped.classifiers, field), field
    assert row.split.cv_folds == shipped.split.cv_folds and shipped.classifiers.select_on == "val_accuracy"
    assert row.synthesis.mode == "real-seeded" and row.generator.ema_decay == 0.99  # the two stated differences


def test_the_table_quotes_test_accuracy_only_for_the_final_row() -> None:
    """Dev-split rows show development accuracy; the held-out test number appears for the final row alone."""
    arm = {"accuracy": 0.5, "f1_macro": 0.5}
    final = len(ablation.ROWS)

    def row(number: int) -> dict:
        return {"row": number, "name": f"r{number}", "arms": {"real": arm}, "dev": {"real": {**arm, "accuracy": 0.61}},
                "test": {"real": {**arm, "accuracy": 0.77}}, "signal": {"cas": 0.5, "gap": 0.1},
                "compute_minutes": 1.0, "seed": 1}

    payload = {"rows": {"4": row(4), str(final): row(final)}, "commands": [], "shrinks": ""}
    lines = {int(line.split("|")[1]): line for line in ablation.markdown("d", payload).splitlines()
             if line.startswith("| ") and line.split("|")[1].strip().isdigit()}
    assert "dev 0.610" in lines[4] and "0.770" not in lines[4]
    assert "dev 0.610 (0.500) / test 0.770" in lines[final]


def test_paired_tests_on_test_images_are_listed_only_for_the_final_dev_split_row() -> None:
    """A development-split row's paired tests ran on the test images: only the final row may show them."""
    arm = {"accuracy": 0.5, "f1_macro": 0.5, "accuracy_mean": 0.5, "accuracy_std": 0.0}
    final = len(ablation.ROWS)

    def row(number: int, dev: bool) -> dict:
        base = {"row": number, "name": f"r{number}", "arms": {"real": arm}, "signal": {"cas": 0.5, "gap": 0.1},
                "compute_minutes": 1.0, "paired": [f"paired-words-of-row-{number}"]}
        return {**base, "dev": {"real": arm}, "test": {"real": arm}, "seed": 1} if dev else base

    payload = {"rows": {"2": row(2, dev=False), "4": row(4, dev=True), str(final): row(final, dev=True)},
               "commands": [], "shrinks": ""}
    text = ablation.markdown("d", payload)
    assert "paired-words-of-row-2" in text and f"paired-words-of-row-{final}" in text
    assert "paired-words-of-row-4" not in text


def _sets(n: int = 120) -> dict[str, dict]:
    import numpy as np

    labels = np.arange(n) % 2
    right, wrong = labels.copy(), 1 - labels
    return {"3": {"labels": labels, "clusters": np.arange(n), "preds": {"synthetic": np.where(np.arange(n) < 60, right, wrong)}},
            "4": {"labels": labels, "clusters": np.arange(n), "preds": {"synthetic": np.where(np.arange(n) < 100, right, wrong)}}}


def test_decisions_read_only_development_images_and_correct_across_every_comparison(monkeypatch) -> None:
    sets = _sets()
    monkeypatch.setattr(ablation, "set_predictions", lambda run_dir, set_name: sets[run_dir] if set_name == "dev"
                        else pytest.fail("a decision read the test images"))
    payload = {"rows": {key: {"row": int(key), "dev": {}, "run_dir": key, "seed": 1} for key in sets}}
    found = ablation.decisions(payload, resamples=200)
    assert [(d["rows"], d["arm"]) for d in found] == [([3, 4], "synthetic")]  # the v-prediction decision, its one arm
    assert found[0]["difference"] == pytest.approx(40 / 120) and found[0]["p_adjusted"] < 0.001


def test_decisions_refuse_rows_scored_on_different_development_images(monkeypatch) -> None:
    sets = _sets()
    sets["4"] = dict(sets["4"], labels=1 - sets["4"]["labels"])
    monkeypatch.setattr(ablation, "set_predictions", lambda run_dir, set_name: sets[run_dir])
    payload = {"rows": {key: {"row": int(key), "dev": {}, "run_dir": key, "seed": 1} for key in sets}}
    with pytest.raises(ValueError, match="rows 3 and 4 were scored on different development images"):
        ablation.decisions(payload, resamples=50)


def test_computed_minutes_counts_a_reused_stage_at_its_first_cost_and_a_keyless_stage_as_run(tmp_path) -> None:
    """The report stage has no cache key (it is rewritten every run); a cached stage costs what it first cost."""
    first, now = tmp_path / "history" / "1", tmp_path / "history" / "2"
    first.mkdir(parents=True)
    now.mkdir()
    (first / "run.json").write_text(json.dumps({"stages": {"generator": {"key": "g", "seconds": 600.0, "cached": False}}}))
    stages = {"generator": {"key": "g", "seconds": 0.5, "cached": True}, "report": {"seconds": 30.0, "path": "r.html"}}
    (now / "run.json").write_text(json.dumps({"stages": stages}))
    record = type("Record", (), {"stages": stages, "run_dir": now})()
    assert ablation.computed_minutes(record) == 10.5
