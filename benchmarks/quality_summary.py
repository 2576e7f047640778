"""The quality stage's numbers of finished runs as one table: each metric beside its real-vs-real reference.

    python -m benchmarks.quality_summary --runs-root /tmp/ablation-runs --domain brain-mri [--keys K1 K2]

Reads ``<runs-root>/<domain>/quality/<key>/quality.json`` (every finished key, or the ones named)
and nothing else: no model runs here. Prints a markdown table per key (overall row of every metric,
flagged fraction, label agreement per class) and writes benchmarks/results/quality-<domain>.{md,json}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.store import atomic_write_json, atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"


def summarise(quality: dict[str, Any]) -> dict[str, Any]:
    """Headline numbers of one quality.json: overall metrics, memorisation, label consistency."""
    metrics = pd.DataFrame(quality["metrics"])
    is_overall = metrics["class"].isin(["all", "overall"])
    rows = []
    for metric, group in metrics.groupby("metric", sort=False):
        overall = group[is_overall[group.index]]
        source = overall if not overall.empty else group  # MS-SSIM is per class only: their mean
        rows.append({"metric": metric, "label": group["label"].iloc[0], "scope": "overall" if not overall.empty
                     else "mean of classes", "synthetic": float(source["synthetic"].mean()),
                     "reference": float(source["reference"].mean())})
    labels = quality["label_consistency"]
    return {"key": quality["key"], "sizes": quality["sizes"],
            "metrics": rows,
            "flagged_fraction": quality["memorisation"]["flagged_fraction"],
            "thresholds": {space: v["threshold"] for space, v in quality["memorisation"]["spaces"].items()},
            "label_agreement": labels["overall_agreement"],
            "per_class_agreement": labels["per_class_agreement"],
            "reference_cv_accuracy": labels.get("reference_cv_accuracy")}


def markdown(domain: str, rows: list[dict[str, Any]]) -> str:
    lines = [f"# Synthetic-data quality: {domain}", "",
             "Each metric on the synthetic set vs the real-vs-real reference (two disjoint halves of the real "
             "20% sample, subsampled to the synthetic set's size per class): the overall value where the stage "
             "writes one, else the mean over classes.", ""]
    for row in rows:
        lines += [f"## {row.get('name', row['key'])} (quality key {row['key']})", "",
                  f"sizes: {row['sizes']}", "", "| metric | scope | synthetic | real-vs-real reference |", "|---|---|---|---|"]
        lines += [f"| {m['label']} | {m['scope']} | {m['synthetic']:.4g} | {m['reference']:.4g} |"
                  for m in row["metrics"]]
        per_class = ", ".join(f"{k} {v:.2f}" for k, v in row["per_class_agreement"].items())
        lines += ["", f"- memorisation: flagged fraction {row['flagged_fraction']:.3f} "
                      f"(thresholds: {', '.join(f'{k} {v:.4f}' for k, v in row['thresholds'].items())})",
                  f"- label agreement (reference classifier, CV accuracy on real "
                  f"{row['reference_cv_accuracy']:.3f}): {row['label_agreement']:.2f} overall; {per_class}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-root", required=True)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--keys", nargs="*", default=None, help="quality keys (default: every finished one)")
    parser.add_argument("--names", nargs="*", default=None, help="a name per key, in the same order")
    args = parser.parse_args(argv)
    root = Path(args.runs_root) / args.domain / "quality"
    keys = args.keys or sorted(p.parent.name for p in root.glob("*/_COMPLETE"))
    if not keys:
        print(f"quality_summary: no finished quality stage under {root}")
        return 1
    rows = []
    for index, key in enumerate(keys):
        row = summarise(json.loads((root / key / "quality.json").read_text()))
        if args.names and index < len(args.names):
            row["name"] = args.names[index]
        rows.append(row)
    text = markdown(args.domain, rows)
    atomic_write_text(RESULTS / f"quality-{args.domain}.md", text)
    atomic_write_json(RESULTS / f"quality-{args.domain}.json", {"domain": args.domain, "rows": rows})
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
