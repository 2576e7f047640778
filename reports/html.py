"""The self-contained HTML report of one run, rendered from the run store's files only.

    report_stage(config, run_dir) -> ReportOutput     writes <run_dir>/report.html atomically

Everything comes from files a finished run left behind (``run.json``, the stages' tables,
summaries, fit records, explanation arrays); nothing is trained or recomputed except cheap
arithmetic on stored predictions (ensemble means, the paired tests), so ``synth-augment report``
can re-render any finished run. Sections whose stage did not run say so instead of failing.

The page needs no scripts and makes no requests: CSS is inline, figures are matplotlib PNGs
embedded as base64 data URIs, and a Content-Security-Policy forbids everything else. jinja2
autoescaping is on, so class names, file names and notes render as text, never as markup.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2

from pipeline.config import DomainConfig, ReportConfig
from pipeline.run_record import read_run_record
from pipeline.store import atomic_write_text
from reports.format import package_version
from reports.run_files import results_table, run_config_of
from reports.sections.answer import answer_section
from reports.sections.classifiers import classifiers_section
from reports.sections.data import data_section
from reports.sections.explanations import explanations_section
from reports.sections.generator import generator_section
from reports.sections.provenance import provenance_section
from reports.sections.quality import quality_section
from reports.sections.trend import trend_section
from reports.sections.warnings import warnings
from reports.share import SHARED_FILE_NAME, scrub_paths, shareable_context

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
TEMPLATE = "report.html.j2"
SECTIONS: tuple[tuple[str, str], ...] = (
    ("answer", "Answer first"), ("trend", "Trend across runs"), ("data", "Data"), ("generator", "Generator"),
    ("quality", "Synthetic quality and privacy"), ("classifiers", "Classifiers"), ("explanations", "Explanations"),
    ("provenance", "Provenance"))


@dataclass
class ReportOutput:
    path: Path
    size_bytes: int
    seconds: float


def report_stage(config: DomainConfig | None, run_dir: str | os.PathLike[str],
                 out_dir: str | os.PathLike[str] | None = None, share: bool = False) -> ReportOutput:
    """Render ``report.html`` (or the shareable ``report-share.html``) from the run's files into ``out_dir``
    (default: the run folder); ``config`` only supplies report settings."""
    started = time.perf_counter()
    run_dir = Path(run_dir)
    html = render_report(run_dir, config, share)
    path = atomic_write_text(Path(out_dir or run_dir) / (SHARED_FILE_NAME if share else "report.html"), html)
    return ReportOutput(path, path.stat().st_size, time.perf_counter() - started)


def latest_run_dir(runs_root: str | os.PathLike[str], domain: str) -> Path | None:
    """The newest ``runs/<domain>/history/<time>/`` holding a run.json (names sort by time)."""
    history = Path(runs_root) / domain / "history"
    runs = sorted(p for p in history.glob("*") if (p / "run.json").is_file()) if history.is_dir() else []
    return runs[-1] if runs else None


def render_report(run_dir: Path, config: DomainConfig | None = None, share: bool = False) -> str:
    """The report page; ``share`` withholds real images, file names and paths (reports.share)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=False, lstrip_blocks=False)
    context = build_context(run_dir, config, share)
    if not share:
        return env.get_template(TEMPLATE).render(**context)
    data_root = str((context["stages"].get("ingest", {}).get("summary") or {}).get("root", ""))
    page = env.get_template(TEMPLATE).render(**shareable_context(context))
    return scrub_paths(page, [str(run_dir.parent.parent), data_root])


# ----------------------------------------------------------------------------------------------
# Context: one function per section, each tolerant of its stage being absent


def build_context(run_dir: Path, config: DomainConfig | None = None, share: bool = False) -> dict[str, Any]:
    record = read_run_record(run_dir)
    meta, stages = record.get("meta", {}), record.get("stages", {})
    config_text = (run_dir / "config.yaml").read_text(encoding="utf-8") if (run_dir / "config.yaml").is_file() else ""
    run_config = run_config_of(config_text) or config
    settings = run_config.report if run_config is not None else ReportConfig()
    domain = meta.get("domain") or (run_config.name if run_config else run_dir.parents[1].name)
    results = results_table(stages)
    answer = answer_section(results, stages, domain, settings, int(meta.get("seed", 0) or 0), run_config)
    return {
        "domain": domain, "run_id": run_dir.name, "profile": meta.get("profile", ""), "seed": meta.get("seed", ""),
        "description": run_config.description if run_config else "", "sections": SECTIONS,
        "answer": answer, "warnings": warnings(stages, results, domain, run_config),
        "trend": trend_section(run_dir, stages),
        "data": data_section(stages), "generator": generator_section(stages, run_config, share),
        "quality": quality_section(stages), "classifiers": classifiers_section(results, stages, run_config),
        "explanations": explanations_section(stages, share),
        "provenance": provenance_section(run_dir, meta, stages, config_text, domain, run_config),
        "rendered_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "version": package_version(), "run_dir": str(run_dir), "share": False, "stages": stages,
    }


__all__ = ["ReportOutput", "report_stage", "latest_run_dir", "render_report", "build_context"]
