"""Warnings shown under the answer: what a reader must know before trusting it."""

from __future__ import annotations

from typing import Any

import pandas as pd

from pipeline.config import DomainConfig
from reports.format import pct
from reports.protocol_table import STUDY_TABLE2, departures_from_study
from reports.run_files import chosen_ensembles, class_names_of

def warnings(stages: dict[str, Any], results: pd.DataFrame | None, domain: str,
             config: DomainConfig | None) -> list[str]:
    out: list[str] = []
    summary = stages.get("classifiers", {}).get("summary", {}) or {}
    out.extend(str(note) for note in summary.get("notes", []))
    if results is not None and "pretrained_note" in results:
        for note in sorted({str(n) for n in results["pretrained_note"].dropna() if str(n)}):
            if note not in out:
                out.append(note)
    if results is not None and not results.empty:
        classes = len(class_names_of(results)) or 2
        for row in chosen_ensembles(results, config).itertuples():
            if row.test_accuracy <= 1.0 / classes + 0.02:
                out.append(f"arm {row.arm}: its chosen model ({row.architecture}) is at chance level on the held-out "
                           f"images ({pct(row.test_accuracy)} with {classes} classes); comparisons with it say little "
                           f"about synthetic data and much about this run's training budget.")
    ingest = stages.get("ingest", {}).get("summary", {}) or {}
    if ingest.get("quarantined"):
        reasons = ", ".join(f"{k} {v}" for k, v in (ingest.get("quarantine_reasons") or {}).items())
        out.append(f"{ingest['quarantined']} file(s) quarantined and not used ({reasons}); see Data.")
    quality = stages.get("quality", {}) or {}
    gate = quality.get("gate") or {}
    if isinstance(gate, dict) and gate.get("passed") is False:
        out.extend(str(m) for m in gate.get("messages", []) or ["quality gate failed"])
    dropped = ((gate.get("filter") or {}).get("dropped") if isinstance(gate, dict) else 0) or 0
    if dropped:
        out.append(f"quality filter dropped {dropped} synthetic image(s) before the classifiers trained.")
    out.extend(f"quality: {n}" for n in (quality.get("summary") or {}).get("notes", []) or [])
    if config is not None and domain in STUDY_TABLE2:
        try:
            departures = departures_from_study(config)
        except Exception:
            departures = []
        if departures:
            out.append(f"This run departs from the study's protocol in {len(departures)} setting(s) "
                       f"(profile {config.profile}; listed under Provenance): compare with the study's number "
                       f"with care.")
    return out
