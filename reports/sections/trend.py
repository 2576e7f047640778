"""Trend across the runs of one domain (held-out accuracy of each arm, run after run)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from pipeline.run_record import read_run_record
from reports.format import pct, plain_text, png_uri
from reports.run_files import chosen_ensembles, results_table

def trend_section(run_dir: Path, stages: dict[str, Any]) -> dict[str, Any]:
    history = run_dir.parent
    rows, arms = [], set()
    for other in sorted(p for p in history.glob("*") if (p / "run.json").is_file()):
        try:
            record = read_run_record(other)
            results = results_table(record.get("stages", {}))
        except (OSError, ValueError, json.JSONDecodeError):
            continue
        current = other.resolve() == run_dir.resolve()
        if current and results is None:
            results = results_table(stages)
        if results is None or results.empty:
            continue
        best = chosen_ensembles(results)
        values = {r.arm: float(r.test_accuracy) for r in best.itertuples()}
        arms.update(values)
        rows.append({"run": other.name, "profile": record.get("meta", {}).get("profile", ""), "current": current,
                     "raw": values, "cells": {arm: pct(v) for arm, v in values.items()}})
    arms_sorted = sorted(arms)
    plot = None
    if rows:
        fig = Figure(figsize=(6.4, 2.6), dpi=90)
        ax = fig.subplots()
        x = list(range(len(rows)))
        for arm in arms_sorted:
            ax.plot(x, [100 * r["raw"].get(arm, math.nan) for r in rows], marker="o", label=plain_text(arm))
        ax.set_xticks(x, [str(i + 1) for i in x])
        ax.set_xlabel("run (oldest to newest; see table)")
        ax.set_ylabel("held-out accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        plot = png_uri(fig)
    return {"rows": rows, "arms": arms_sorted, "plot": plot}
