"""Provenance: what ran, with which keys, code and settings, and where it departs from the study."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.config import DomainConfig
from reports.protocol_table import STUDY_TABLE2, departures_from_study
from reports.sections.generator import generator_hash

def provenance_section(run_dir: Path, meta: dict[str, Any], stages: dict[str, Any], config_text: str, domain: str,
                       config: DomainConfig | None) -> dict[str, Any]:
    gen = stages.get("generator", {})
    facts = [("domain", domain), ("run record", str(run_dir / "run.json")),
             ("started (UTC)", meta.get("started_utc", "")), ("device", meta.get("device", "not recorded")),
             ("code version", meta.get("code_version", "not recorded")),
             ("command", meta.get("command", "not recorded")),
             ("data", (stages.get("ingest", {}).get("summary") or {}).get("root", "")),
             ("ingest key", stages.get("ingest", {}).get("key", "")),
             ("split hash", stages.get("split", {}).get("split_hash", "")),
             ("generator hash", generator_hash(gen)),
             ("synthesis key", stages.get("synthesis", {}).get("key", "")),
             ("classifiers key", stages.get("classifiers", {}).get("key", "")),
             ("explanations key", stages.get("explain", {}).get("key") or "")]
    stage_rows = [{"name": name, "key": info.get("key") or "-", "cached": "yes" if info.get("cached") else "no",
                   "seconds": f"{info.get('seconds', 0):.1f}", "peak": info.get("peak_rss_mb", "")}
                  for name, info in stages.items()]
    departures = []
    if config is not None and domain in STUDY_TABLE2:
        try:
            departures = [{"setting": d["setting"], "ours": d["this run"], "study": d["study (gpu profile)"]}
                          for d in departures_from_study(config)]
        except Exception:
            departures = []
    return {"facts": [(k, v) for k, v in facts if v != ""], "stages": stage_rows, "config": config_text,
            "departures": departures}
