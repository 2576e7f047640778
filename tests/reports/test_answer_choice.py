"""The answer box chooses each arm's model on validation and corrects its p-values (oracles computed here).

A constructed run: two architectures per arm whose validation and held-out rankings disagree, so a
choice made on held-out results would show a different architecture, accuracy and p-value.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest, chi2

from pipeline.config import DomainConfig, ReportConfig
from reports.sections.answer import answer_section

N = 60
CLASSES = ["a", "b"]


def _probs(correct: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Probabilities whose argmax is right exactly where ``correct`` is True."""
    pred = np.where(correct, y, 1 - y)
    probs = np.full((len(y), 2), 0.1)
    probs[np.arange(len(y)), pred] = 0.9
    return probs


def _run(tmp_path: Path, patients: list[str] | None = None) -> tuple[dict, dict[tuple[str, str], np.ndarray], np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.array([i % 2 for i in range(N)])
    stage = tmp_path / "classifiers" / "k"
    (stage / "scores" / "test").mkdir(parents=True)
    test = pd.DataFrame({"path": [f"/x/{i}.png" for i in range(N)], "sha256": [f"{i:064x}" for i in range(N)],
                         "label": [CLASSES[v] for v in y], "patient_id": patients, "dup_group": None,
                         "source": "real"})
    test.to_parquet(stage / "test_manifest.parquet")
    # (arm, architecture) -> (mean validation loss, held-out correctness)
    plan = {("real", "resnet18"): (0.50, rng.random(N) < 0.70), ("real", "resnet50"): (0.60, rng.random(N) < 0.72),
            ("synthetic", "resnet18"): (0.40, rng.random(N) < 0.55),  # best on validation, worse held out
            ("synthetic", "resnet50"): (0.90, rng.random(N) < 0.90),  # worse on validation, best held out
            ("real+aug", "resnet18"): (0.45, rng.random(N) < 0.75)}
    rows, correct = [], {}
    for (arm, arch), (val_loss, hits) in plan.items():
        keys = []
        for fold in range(2):
            key = f"{arm}-{arch}-{fold}".replace("+", "p")
            np.save(stage / "scores" / "test" / f"{key}.npy", _probs(hits, y))
            keys.append(key)
            rows.append({"arm": arm, "architecture": arch, "fold": str(fold), "fit_key": key, "val_loss": val_loss,
                         "val_accuracy": 1 - val_loss, "test_accuracy": float(hits.mean()), "f1_macro": 0.5,
                         "n_test": N, "support[a]": N // 2, "support[b]": N // 2})
        rows.append({"arm": arm, "architecture": arch, "fold": "ensemble", "fit_key": ",".join(keys),
                     "val_loss": None, "val_accuracy": None, "test_accuracy": float(hits.mean()), "f1_macro": 0.5,
                     "n_test": N, "support[a]": N // 2, "support[b]": N // 2})
        correct[(arm, arch)] = hits
    pd.DataFrame(rows).to_parquet(stage / "results.parquet")
    return {"classifiers": {"results": str(stage / "results.parquet")}}, correct, y


def _answer(tmp_path: Path, patients: list[str] | None = None, **classifiers: object) -> tuple[dict, dict]:
    stages, correct, _ = _run(tmp_path, patients)
    results = pd.read_parquet(stages["classifiers"]["results"])
    config = DomainConfig.model_validate({"name": "toy", "classifiers": {
        "architectures": ["resnet18", "resnet50"], **classifiers}})
    answer = answer_section(results, stages, "toy", ReportConfig(bootstrap_resamples=200), 0, config)
    return answer, correct


def _holm(pvalues: list[float]) -> list[float]:
    order = np.argsort(pvalues)
    adjusted, running = [0.0] * len(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def _exact(reference: np.ndarray, challenger: np.ndarray) -> float:
    b, c = int(np.sum(reference & ~challenger)), int(np.sum(~reference & challenger))
    return float(binomtest(c, b + c, 0.5).pvalue) if b + c else 1.0


def test_each_arm_speaks_through_its_validation_choice_not_its_held_out_best(tmp_path: Path) -> None:
    answer, correct = _answer(tmp_path)
    rows = {r["arm"]: r for r in answer["rows"]}
    assert rows["synthetic"]["architecture"] == "resnet18"  # lower validation loss; resnet50 scores higher held out
    assert float(rows["synthetic"]["accuracy_raw"]) == pytest.approx(correct[("synthetic", "resnet18")].mean())
    assert rows["real"]["architecture"] == "resnet18"
    # two comparisons (synthetic vs real, synthetic vs real+aug), Holm-corrected, computed here by hand
    raw = [_exact(correct[("real", "resnet18")], correct[("synthetic", "resnet18")]),
           _exact(correct[("real+aug", "resnet18")], correct[("synthetic", "resnet18")])]
    adjusted = _holm(raw)
    assert answer["comparisons"] == 2
    assert f"Holm-adjusted p = {adjusted[0]:.3f}" in rows["synthetic"]["paired"] or adjusted[0] < 0.001
    assert f"exact McNemar p = {raw[1]:.3f}" in rows["synthetic"]["paired_aug"] or raw[1] < 0.001
    assert "comparisons, Holm-corrected" in answer["headline"]
    chosen = {arm: correct[(arm, rows[arm]["architecture"])].mean() for arm in rows}
    assert f"best arm overall: {max(chosen, key=chosen.get)} (" in answer["headline"]
    assert ". " not in answer["headline"] and answer["headline"].endswith(".")  # one sentence


def test_real_aug_is_labelled_as_the_reference_it_is_not_as_missing_data(tmp_path: Path) -> None:
    """real+aug is a reference, not a challenger: its row must not claim a real-only arm or predictions are missing."""
    answer, _ = _answer(tmp_path)
    rows = {r["arm"]: r for r in answer["rows"]}
    assert "no real-only arm" not in rows["real+aug"]["paired"]
    assert "classic-augmentation reference" in rows["real+aug"]["paired"]


def test_a_declared_primary_architecture_answers_for_every_arm(tmp_path: Path) -> None:
    answer, correct = _answer(tmp_path, primary_architecture="resnet50")
    rows = {r["arm"]: r for r in answer["rows"]}
    assert rows["synthetic"]["architecture"] == rows["real"]["architecture"] == "resnet50"
    assert rows["real+aug"]["architecture"] == "resnet18"  # it has no resnet50 fit: its own validation choice
    assert float(rows["synthetic"]["accuracy_raw"]) == pytest.approx(correct[("synthetic", "resnet50")].mean())


def test_patients_are_resampled_whole_with_the_clustered_mcnemar_test(tmp_path: Path) -> None:
    patients = [f"p{i // 3}" for i in range(N)]  # 20 patients, 3 images each
    answer, correct = _answer(tmp_path, patients)
    ref, chal = correct[("real", "resnet18")], correct[("synthetic", "resnet18")]
    ids = np.arange(N) // 3
    d = np.bincount(ids, weights=(ref & ~chal).astype(float)) - np.bincount(ids, weights=(~ref & chal).astype(float))
    expected = float(chi2.sf(d.sum() ** 2 / np.sum(d ** 2), df=1))  # Durkalski et al. 2003
    assert answer["clusters"] == 20
    rows = {r["arm"]: r for r in answer["rows"]}
    assert f"clustered McNemar p = {expected:.3f}" in rows["synthetic"]["paired"] or expected < 0.001
    assert "exact McNemar" not in rows["synthetic"]["paired"]


def test_the_answer_on_the_development_images_reads_only_the_development_scores(tmp_path: Path) -> None:
    """A benchmark chooses settings on set_name="dev": there synthetic beats real by far, on test it loses."""
    stages, _, y = _run(tmp_path)
    stage = Path(stages["classifiers"]["results"]).parent
    (stage / "scores" / "dev").mkdir()
    pd.read_parquet(stage / "test_manifest.parquet").to_parquet(stage / "dev_manifest.parquet")
    results = pd.read_parquet(stage / "results.parquet")
    dev_hits = {"real": np.arange(N) < 30, "synthetic": np.arange(N) < 57, "real+aug": np.arange(N) < 33}
    for row in results.itertuples():
        for key in str(row.fit_key).split(","):
            np.save(stage / "scores" / "dev" / f"{key}.npy", _probs(dev_hits[row.arm], y))
    results["dev_accuracy"] = [float(dev_hits[a].mean()) for a in results["arm"]]
    results["dev_f1_macro"], results["n_dev"] = 0.5, N
    config = DomainConfig.model_validate({"name": "toy", "classifiers": {"architectures": ["resnet18", "resnet50"]}})
    dev = answer_section(results, stages, "toy", ReportConfig(bootstrap_resamples=200), 0, config, set_name="dev")
    test = answer_section(results, stages, "toy", ReportConfig(bootstrap_resamples=200), 0, config)
    assert dev["tone"] == "helps" and dev["headline"].startswith("Yes: synthetic data helped on toy")
    assert "best arm overall: synthetic (95.0%)" in dev["headline"]
    assert float({r["arm"]: r for r in dev["rows"]}["real"]["accuracy_raw"]) == 0.5
    assert test["tone"] != "helps" and "best arm overall: synthetic" not in test["headline"]
