"""The data section: counts per class and side, quarantined files, ingest notes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd


QUARANTINE_ROWS = 200


def data_section(stages: dict[str, Any]) -> dict[str, Any]:
    ingest = stages.get("ingest", {})
    split = stages.get("split", {}).get("summary", {}) or {}
    usable = (ingest.get("summary") or {}).get("per_class", {})
    synthetic_counts: dict[str, int] = {}
    manifest = stages.get("synthesis", {}).get("manifest")
    if manifest and Path(manifest).with_suffix(".parquet").is_file():
        synthetic_counts = pd.read_parquet(Path(manifest).with_suffix(".parquet"))["label"].astype(str).value_counts().to_dict()
    labels = list(split.get("per_class", {}) or usable)
    rows = [{"label": label, "real": usable.get(label, ""), "train": split.get("per_class", {}).get(label, {}).get("train", ""),
             "test": _held_out_cell(split.get("per_class", {}).get(label, {})),
             "synthetic": synthetic_counts.get(label, 0 if synthetic_counts else "")} for label in labels]
    quarantine, total = [], 0
    path = ingest.get("quarantine")
    if path and Path(path).with_suffix(".parquet").is_file():
        table = pd.read_parquet(Path(path).with_suffix(".parquet"))
        total = len(table)
        for row in table.head(QUARANTINE_ROWS).to_dict(orient="records"):
            quarantine.append({"reason": row.get("reason", ""), "file": row.get("relpath") or row.get("path", ""),
                               "label": row.get("label") or "", "detail": row.get("detail") or ""})
    return {"rows": rows, "quarantine": quarantine, "quarantine_total": total,
            "quarantine_more": total > len(quarantine),
            "quarantine_csv": str(Path(path).with_suffix(".csv")) if path else "",
            "notes": list((ingest.get("summary") or {}).get("notes", []))[:20]}


def _held_out_cell(sides: dict[str, Any]) -> Any:
    """Held-out count; with a development split, which part is test and which is development."""
    dev = sides.get("dev", 0)
    return f"{sides.get('test', '')} test + {dev} development" if dev else sides.get("test", "")
