"""The answer box: each arm chosen on validation, paired tests against real-only and real+aug, Holm."""

from __future__ import annotations

from typing import Any

import pandas as pd

from pipeline.config import SYNTHETIC_ARMS, DomainConfig, ReportConfig
from reports.format import mean_std, pct
from reports.paired import PairedComparison, compare, holm
from reports.protocol_table import STUDY_TABLE2
from reports.run_files import chosen_ensembles, ensemble_predictions, held_out_labels, scores_dir_of

REFERENCE_ARM = "real"
AUGMENTED_ARM = "real+aug"
# per evaluation set: (accuracy, macro-F1, image count) columns of the results table. The report reads
# "test"; "dev" (the development split) is what a benchmark reads to choose settings without the test images.
SET_COLUMNS = {"test": ("test_accuracy", "f1_macro", "n_test"), "dev": ("dev_accuracy", "dev_f1_macro", "n_dev")}


def comparisons_shown(arms: list[str]) -> list[tuple[str, str]]:
    """(challenger, reference) pairs the answer tests: every synthetic-using arm against real-only and,
    when the run has it, against real+aug (does synthetic data add anything beyond classic augmentation?)."""
    synthetic = [arm for arm in arms if arm in SYNTHETIC_ARMS]
    return [(arm, reference) for reference in (REFERENCE_ARM, AUGMENTED_ARM) if reference in arms
            for arm in synthetic]


def answer_section(results: pd.DataFrame | None, stages: dict[str, Any], domain: str, settings: ReportConfig,
                   seed: int, config: DomainConfig | None = None, set_name: str = "test") -> dict[str, Any]:
    if results is None or results.empty:
        return {"available": False, "reason": "Not available: the classifiers stage did not run, so there are no "
                                              "held-out results to compare."}
    chosen = chosen_ensembles(results, config)
    folds = results[results["fold"] != "ensemble"]
    accuracy, f1, count = SET_COLUMNS[set_name]
    scores_dir = scores_dir_of(stages, set_name)
    held_out = held_out_labels(stages, results, set_name) if scores_dir else None
    preds = ({row.arm: ensemble_predictions(scores_dir, row.fit_key) for row in chosen.itertuples()}
             if held_out is not None and scores_dir is not None else {})
    arms = [str(a) for a in chosen["arm"]]
    raw: dict[tuple[str, str], PairedComparison] = {}
    for challenger, reference in comparisons_shown(arms):
        if held_out is not None and preds.get(challenger) is not None and preds.get(reference) is not None:
            raw[(challenger, reference)] = compare(held_out[0], preds[reference], preds[challenger],
                                                   settings.bootstrap_resamples, seed, clusters=held_out[1])
    corrected = dict(zip(raw, holm({f"{c} vs {r}": v for (c, r), v in raw.items()}).values()))
    study = STUDY_TABLE2.get(domain, {})
    rows, words = [], []
    for row in chosen.itertuples():
        arm_folds = folds[(folds["arm"] == row.arm) & (folds["architecture"] == row.architecture)]
        entry = {"arm": row.arm, "architecture": row.architecture, "chosen_by": row.chosen_by,
                 "accuracy": pct(getattr(row, accuracy)),
                 "accuracy_raw": repr(float(getattr(row, accuracy))), "f1": f"{getattr(row, f1):.3f}",
                 "f1_raw": repr(float(getattr(row, f1))),
                 "accuracy_folds": mean_std(arm_folds[accuracy], percent=True),
                 "f1_folds": mean_std(arm_folds[f1]), "paired": "", "paired_significant": False,
                 "paired_negative": False, "paired_aug": "", "study": ""}
        if row.arm == "synthetic" and study:
            arch, value = next(iter(study.items()))
            entry["study"] = f"{pct(value)} ({arch}, synthetic only, Table 2)"
        for reference, field in ((REFERENCE_ARM, "paired"), (AUGMENTED_ARM, "paired_aug")):
            result = corrected.get((row.arm, reference))
            if result is None:
                continue
            entry[field] = f"{result.statistics()}: {result.verdict()}"
            if reference == REFERENCE_ARM:
                entry.update(paired_significant=result.significant,
                             paired_negative=result.significant and result.difference < 0)
            words.append(result.words(f"{row.arm} ({row.architecture}) vs {reference} "
                                      f"({_arch(chosen, reference)})"))
        if row.arm == AUGMENTED_ARM and not entry["paired"]:
            entry["paired"] = "not tested: the classic-augmentation reference the synthetic arms are compared with"
        elif row.arm != REFERENCE_ARM and not entry["paired"]:
            entry["paired"] = "no paired test (no real-only arm or stored predictions)"
        rows.append(entry)
    headline, tone = _headline(domain, corrected, chosen, accuracy)
    clusters = next(iter(corrected.values())).clusters if corrected else 0
    n_test = int(len(held_out[0])) if held_out is not None else int(chosen[count].iloc[0])
    return {"available": True, "rows": rows, "words": words, "headline": headline, "tone": tone,
            "n_test": n_test, "clusters": clusters if clusters and clusters < n_test else 0,
            "comparisons": len(corrected), "resamples": settings.bootstrap_resamples,
            "chosen_by": sorted({str(c) for c in chosen["chosen_by"]})}


def _arch(chosen: pd.DataFrame, arm: str) -> str:
    match = chosen[chosen["arm"] == arm]
    return str(match["architecture"].iloc[0]) if not match.empty else "?"


def _headline(domain: str, comparisons: dict[tuple[str, str], PairedComparison], chosen: pd.DataFrame,
              accuracy: str = "test_accuracy") -> tuple[str, str]:
    """One sentence: does synthetic data help, beyond classic augmentation too, and which arm is best overall."""
    versus_real = {c: v for (c, r), v in comparisons.items() if r == REFERENCE_ARM}
    if not versus_real:
        return (f"{domain}: no arm with synthetic data could be compared with the real-only arm.", "unclear")
    arm, best = max(versus_real.items(), key=lambda item: item[1].difference)
    count = f"{best.comparisons} comparison{'s' if best.comparisons != 1 else ''}, Holm-corrected"
    if best.significant and best.difference > 0:
        opening, tone = f"Yes: synthetic data helped on {domain}", "helps"
    elif best.significant and best.difference < 0:
        opening, tone = f"No: synthetic data hurt on {domain}", "hurts"
    else:
        opening, tone = f"Not measurably on {domain}", "unclear"
    sentence = f"{opening}: the best arm with it, {arm} vs real-only, {best.statistics()} ({best.verdict()})"
    versus_aug = comparisons.get((arm, AUGMENTED_ARM))
    if versus_aug is not None:
        if versus_aug.significant and versus_aug.difference > 0:
            beyond = "and it also beat classic augmentation"
        elif versus_aug.significant:
            beyond = "but classic augmentation (real+aug) did better"
        else:
            beyond = "and it adds nothing significant beyond classic augmentation"
        sentence += f", {beyond} (vs real+aug {versus_aug.statistics()})"
    top = chosen.sort_values(accuracy, ascending=False, kind="stable").iloc[0]
    sentence += f"; best arm overall: {top['arm']} ({pct(top[accuracy])}); {count}."
    return sentence, tone
