"""The protocol benchmark's table: per (arm, architecture) fold mean +- std and the fold ensemble of
each held-out metric, the study's Table 2 number beside ours, and where a run's settings depart from
the study's protocol (the gpu profile). Used by benchmarks/protocol.py; pure functions of tables.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from pipeline.config import DomainConfig, load_domain_config

# Nafi et al. 2024, Table 2 as quoted in MISSION.md: best held-out real accuracy after training on
# synthetic data only, per domain and the architecture that reached it.
STUDY_TABLE2 = {
    "covid-ct": {"resnet50": 0.7824},
    "brain-mri": {"vgg19": 0.8646},
    "all-leukemia": {"densenet121": 0.9138},
}
METRICS = ("test_accuracy", "precision_macro", "recall_macro", "f1_macro")


def departures_from_study(config: DomainConfig) -> list[dict[str, Any]]:
    """Every split/generator/synthesis/classifier setting where this run differs from the study (gpu profile)."""
    study = load_domain_config(config.name, "gpu").to_dict()
    ours = config.to_dict()
    rows = []
    for section in ("split", "generator", "synthesis", "classifiers"):
        for key, value in ours[section].items():
            if study[section][key] != value:
                rows.append({"setting": f"{section}.{key}", "this run": value, "study (gpu profile)": study[section][key]})
    return rows


def aggregate(results: pd.DataFrame, domain: str) -> pd.DataFrame:
    """One row per (arm, architecture): fold mean +- std and the ensemble for each metric, plus the study."""
    folds = results[results["fold"].astype(str) != "ensemble"]
    ensemble = results[results["fold"].astype(str) == "ensemble"].set_index(["arm", "architecture"])
    rows = []
    for (arm, architecture), group in folds.groupby(["arm", "architecture"], sort=True):
        row: dict[str, Any] = {"arm": arm, "architecture": architecture, "folds": int(len(group))}
        for metric in METRICS:
            row[f"{metric}_mean"] = float(group[metric].mean())
            row[f"{metric}_std"] = float(group[metric].std(ddof=1)) if len(group) > 1 else 0.0
            row[f"{metric}_ensemble"] = float(ensemble.loc[(arm, architecture), metric])
        row["study_accuracy"] = STUDY_TABLE2.get(domain, {}).get(architecture) if arm == "synthetic" else None
        row["epochs_run_mean"] = float(group["epochs_run"].astype(float).mean())
        row["time_budget_hit"] = bool(group["time_budget_hit"].any())
        rows.append(row)
    return pd.DataFrame(rows)


def markdown_table(table: pd.DataFrame, domain: str) -> str:
    lines = ["| arm | architecture | folds | accuracy (folds) | accuracy (ensemble) | precision | recall | F1 "
             "| study accuracy |", "|---|---|---|---|---|---|---|---|---|"]
    for row in table.itertuples():
        study = f"{row.study_accuracy:.2%}" if isinstance(row.study_accuracy, float) else "-"
        lines.append(
            f"| {row.arm} | {row.architecture} | {row.folds} "
            f"| {row.test_accuracy_mean:.3f} +- {row.test_accuracy_std:.3f} | {row.test_accuracy_ensemble:.3f} "
            f"| {row.precision_macro_mean:.3f} +- {row.precision_macro_std:.3f} "
            f"| {row.recall_macro_mean:.3f} +- {row.recall_macro_std:.3f} "
            f"| {row.f1_macro_mean:.3f} +- {row.f1_macro_std:.3f} | {study} |")
    best = STUDY_TABLE2.get(domain)
    if best:
        (architecture, accuracy), = best.items()
        lines.append("")
        lines.append(f"Study (Nafi et al. 2024, Table 2): best synthetic-only accuracy on the held-out real 80% "
                     f"for {domain}: {accuracy:.2%} ({architecture}). Precision/recall/F1 are macro averages.")
    return "\n".join(lines)
