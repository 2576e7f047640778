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

import base64
import io
import json
import math
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
import yaml
from matplotlib.figure import Figure

from pipeline.config import DomainConfig, ReportConfig, from_dict
from pipeline.run_record import read_run_record
from pipeline.store import atomic_write_text, read_json
from classifiers.choice import choose_per_arm
from pipeline.folds import groups_of
from reports.paired import PairedComparison, compare, holm
from reports.protocol_table import STUDY_TABLE2, departures_from_study
from reports.share import SHARED_FILE_NAME, scrub_paths, shareable_context

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
TEMPLATE = "report.html.j2"
REFERENCE_ARM = "real"
AUGMENTED_ARM = "real+aug"
SECTIONS: tuple[tuple[str, str], ...] = (
    ("answer", "Answer first"), ("trend", "Trend across runs"), ("data", "Data"), ("generator", "Generator"),
    ("quality", "Synthetic quality and privacy"), ("classifiers", "Classifiers"), ("explanations", "Explanations"),
    ("provenance", "Provenance"))
QUARANTINE_ROWS = 200
GRID_PER_CLASS = 6


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
    run_config = _run_config(config_text) or config
    settings = run_config.report if run_config is not None else ReportConfig()
    domain = meta.get("domain") or (run_config.name if run_config else run_dir.parents[1].name)
    results = _results(stages)
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
        "version": _version(), "run_dir": str(run_dir), "share": False, "stages": stages,
    }


def _run_config(text: str) -> DomainConfig | None:
    if not text:
        return None
    try:
        return from_dict(DomainConfig, yaml.safe_load(text), source="config.yaml")
    except Exception:  # a run written by an older/newer code version: render without its typed config
        return None


def _results(stages: dict[str, Any]) -> pd.DataFrame | None:
    path = stages.get("classifiers", {}).get("results")
    if not path or not Path(path).with_suffix(".parquet").is_file():
        return None
    table = pd.read_parquet(Path(path).with_suffix(".parquet"))
    table["fold"] = table["fold"].astype(str)
    return table


def _fits_dir(stages: dict[str, Any]) -> Path | None:
    path = stages.get("classifiers", {}).get("results")
    return Path(path).parents[2] / "classifier-fits" if path else None


def chosen_ensembles(results: pd.DataFrame, config: DomainConfig | None = None) -> pd.DataFrame:
    """Per arm, the fold ensemble of the architecture chosen on validation (classifiers.choice), never on
    held-out results: the config's primary architecture, or the best mean validation result by select_on."""
    cc = config.classifiers if config is not None else None
    return choose_per_arm(results, cc.select_on if cc else "val_loss", cc.primary_architecture if cc else None)


def _scores_dir(stages: dict[str, Any]) -> Path | None:
    path = stages.get("classifiers", {}).get("results")
    return Path(path).parent / "scores" / "test" if path else None


def _ensemble_predictions(scores_dir: Path, fit_keys: str) -> np.ndarray | None:
    probs = []
    for key in str(fit_keys).split(","):
        path = scores_dir / f"{key}.npy"
        if not path.is_file():
            return None
        probs.append(np.load(path))
    return np.mean(np.stack(probs), axis=0).argmax(axis=1)


def _held_out(stages: dict[str, Any], results: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None] | None:
    """(label indices, cluster ids or None) of the held-out test images, in the order they were scored."""
    manifest = Path(stages["classifiers"]["results"]).parent / "test_manifest.parquet"
    if not manifest.is_file():
        return None
    class_names = _class_names(results)
    table = pd.read_parquet(manifest)
    labels = np.array([class_names.index(str(label)) for label in table["label"]])
    return labels, groups_of(table)


def comparisons_shown(arms: list[str]) -> list[tuple[str, str]]:
    """(challenger, reference) pairs the answer tests: every synthetic-using arm against real-only and,
    when the run has it, against real+aug (does synthetic data add anything beyond classic augmentation?)."""
    synthetic = [arm for arm in arms if "synthetic" in arm]
    return [(arm, reference) for reference in (REFERENCE_ARM, AUGMENTED_ARM) if reference in arms
            for arm in synthetic]


def answer_section(results: pd.DataFrame | None, stages: dict[str, Any], domain: str, settings: ReportConfig,
                   seed: int, config: DomainConfig | None = None) -> dict[str, Any]:
    if results is None or results.empty:
        return {"available": False, "reason": "Not available: the classifiers stage did not run, so there are no "
                                              "held-out results to compare."}
    chosen = chosen_ensembles(results, config)
    folds = results[results["fold"] != "ensemble"]
    scores_dir = _scores_dir(stages)
    held_out = _held_out(stages, results) if scores_dir else None
    preds = ({row.arm: _ensemble_predictions(scores_dir, row.fit_key) for row in chosen.itertuples()}
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
                 "accuracy": pct(row.test_accuracy),
                 "accuracy_raw": repr(float(row.test_accuracy)), "f1": f"{row.f1_macro:.3f}",
                 "f1_raw": repr(float(row.f1_macro)),
                 "accuracy_folds": mean_std(arm_folds["test_accuracy"], percent=True),
                 "f1_folds": mean_std(arm_folds["f1_macro"]), "paired": "", "paired_significant": False,
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
        if row.arm != REFERENCE_ARM and not entry["paired"]:
            entry["paired"] = "no paired test (no real-only arm or stored predictions)"
        rows.append(entry)
    headline, tone = _headline(domain, corrected, chosen)
    clusters = next(iter(corrected.values())).clusters if corrected else 0
    n_test = int(len(held_out[0])) if held_out is not None else int(chosen["n_test"].iloc[0])
    return {"available": True, "rows": rows, "words": words, "headline": headline, "tone": tone,
            "n_test": n_test, "clusters": clusters if clusters and clusters < n_test else 0,
            "comparisons": len(corrected), "resamples": settings.bootstrap_resamples,
            "chosen_by": sorted({str(c) for c in chosen["chosen_by"]})}


def _arch(chosen: pd.DataFrame, arm: str) -> str:
    match = chosen[chosen["arm"] == arm]
    return str(match["architecture"].iloc[0]) if not match.empty else "?"


def _headline(domain: str, comparisons: dict[tuple[str, str], PairedComparison], chosen: pd.DataFrame
              ) -> tuple[str, str]:
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
    top = chosen.sort_values("test_accuracy", ascending=False, kind="stable").iloc[0]
    sentence += f"; best arm overall: {top['arm']} ({pct(top['test_accuracy'])}); {count}."
    return sentence, tone


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
        classes = len(_class_names(results)) or 2
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


def trend_section(run_dir: Path, stages: dict[str, Any]) -> dict[str, Any]:
    history = run_dir.parent
    rows, arms = [], set()
    for other in sorted(p for p in history.glob("*") if (p / "run.json").is_file()):
        try:
            record = read_run_record(other)
            results = _results(record.get("stages", {}))
        except (OSError, ValueError, json.JSONDecodeError):
            continue
        current = other.resolve() == run_dir.resolve()
        if current and results is None:
            results = _results(stages)
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
            ax.plot(x, [100 * r["raw"].get(arm, math.nan) for r in rows], marker="o", label=_t(arm))
        ax.set_xticks(x, [str(i + 1) for i in x])
        ax.set_xlabel("run (oldest to newest; see table)")
        ax.set_ylabel("held-out accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        plot = png_uri(fig)
    return {"rows": rows, "arms": arms_sorted, "plot": plot}


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


def generator_section(stages: dict[str, Any], config: DomainConfig | None, share: bool = False) -> dict[str, Any]:
    gen = stages.get("generator")
    if not gen:
        return {"available": False}
    summary = gen.get("summary", {}) or {}
    synth = (stages.get("synthesis") or {}).get("summary", {}) or {}
    facts = [("generator hash", str(_generator_hash(gen))[:16]),
             ("training steps", summary.get("steps", "")), ("parameters", f"{summary.get('parameters', 0):,}"),
             ("image size", f"{summary.get('image_size', '')} px, {summary.get('mode', '')}"),
             ("training images", summary.get("train_images", "")),
             ("final loss", _num(summary.get("final_loss"))),
             ("mean loss of the last 50 steps", _num(summary.get("mean_loss_last_50"))),
             ("training time", f"{summary.get('train_seconds', '')} s ({summary.get('images_per_second', '')} img/s)")]
    if summary.get("resumed_from"):
        facts.append(("resumed from step", summary["resumed_from"]))
    if synth:
        facts += [("sampler", f"{synth.get('sampler', '')}, {synth.get('steps', '')} steps, guidance "
                              f"{synth.get('guidance_scale', '')}"),
                  ("synthetic images", f"{synth.get('images', '')} ({synth.get('per_class', '')} per class)")]
    loss_plot, loss_note = None, ""
    where = gen.get("pipeline") or gen.get("checkpoint")  # pipeline folder (now) or generator.pt (older runs)
    losses_path = Path(where).parent / "losses.json" if where else None
    if losses_path is not None and losses_path.is_file():
        losses = np.array(read_json(losses_path), dtype=np.float64).reshape(-1, 2)
        fig = Figure(figsize=(5.2, 2.6), dpi=90)
        ax = fig.subplots()
        ax.plot(losses[:, 0], losses[:, 1], lw=0.6, alpha=0.4, label="per step")
        window = max(1, len(losses) // 25)
        if len(losses) >= window > 1:
            smooth = np.convolve(losses[:, 1], np.ones(window) / window, mode="valid")
            ax.plot(losses[window - 1:, 0], smooth, lw=1.5, label=f"mean of {window}")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        loss_plot = png_uri(fig)
    else:
        loss_note = "Loss curve not recorded for this generator (trained before the loss log existed)."
    return {"available": True, "facts": facts, "loss_plot": loss_plot, "loss_note": loss_note,
            "grids": _real_vs_synthetic_grids(stages, int(summary.get("image_size") or 64), summary.get("mode", "L"),
                                              include_real=not share)}


def _real_vs_synthetic_grids(stages: dict[str, Any], size: int, mode: str,
                             include_real: bool = True) -> list[dict[str, str]]:
    """Per class, real training images over synthetic ones on one gray scale (synthetic only when sharing).
    Each image is checked against the sha256 recorded for it: one changed since ingest is left out, and said."""
    split_path = stages.get("split", {}).get("split")
    manifest = stages.get("synthesis", {}).get("manifest")
    if not split_path or not manifest or not Path(split_path).with_suffix(".parquet").is_file() \
            or not Path(manifest).with_suffix(".parquet").is_file():
        return []
    real = pd.read_parquet(Path(split_path).with_suffix(".parquet"))
    real = real[real["split"] == "train"]
    synthetic = pd.read_parquet(Path(manifest).with_suffix(".parquet"))
    out = []
    for label in list(dict.fromkeys(synthetic["label"].astype(str))):
        rows = {"synthetic": synthetic[synthetic["label"].astype(str) == label].head(GRID_PER_CLASS)}
        if include_real:
            rows = {"real": real[real["label"].astype(str) == label].head(GRID_PER_CLASS), **rows}
        fig = Figure(figsize=(1.1 * GRID_PER_CLASS, 1.2 * len(rows)), dpi=90)
        axes = fig.subplots(len(rows), GRID_PER_CLASS, squeeze=False)
        left_out = 0
        for r, (name, table) in enumerate(rows.items()):
            for c in range(GRID_PER_CLASS):
                axes[r][c].set_axis_off()
                pixels = _verified_pixels(table, c, mode, size) if c < len(table) else None
                left_out += c < len(table) and pixels is None
                if pixels is not None:
                    axes[r][c].imshow(pixels, cmap="gray" if pixels.ndim == 2 else None, vmin=0, vmax=255,
                                      interpolation="nearest")
            axes[r][0].set_title(name, fontsize=8, loc="left")
        fig.subplots_adjust(wspace=0.05, hspace=0.25)
        missing = f" {left_out} image(s) changed or missing since they were recorded: not shown." if left_out else ""
        if include_real:
            out.append({"src": png_uri(fig), "alt": f"Class {label}: real images (top row) and synthetic images "
                                                    f"(bottom row) at {size} px on the same gray scale",
                        "caption": f"{label}: real (top) vs synthetic (bottom), same gray scale (0-255).{missing}"})
        else:
            out.append({"src": png_uri(fig), "alt": f"Class {label}: synthetic images only at {size} px (real "
                                                    f"images withheld in this shareable copy)",
                        "caption": f"{label}: synthetic images (real images withheld), gray scale 0-255.{missing}"})
    return out


def _verified_pixels(table: pd.DataFrame, row: int, mode: str, size: int) -> np.ndarray | None:
    """The row's image at the models' resolution, or None when it no longer holds the recorded content."""
    from pipeline.errors import IntegrityError
    from pipeline.image_tensors import square_resize
    from pipeline.imageio import ImageReadError, read_image
    from pipeline.integrity import verify_files

    path, sha = str(table["path"].iloc[row]), str(table["sha256"].iloc[row])
    try:
        verify_files([path], [sha])
        return square_resize(read_image(path, mode).pixels, size)
    except (IntegrityError, ImageReadError, OSError):
        return None


def quality_section(stages: dict[str, Any]) -> dict[str, Any]:
    """The quality stage's quality.json (schema 1) and gate, or a generic summary table for other formats."""
    quality = stages.get("quality")
    if not quality:
        return {"available": False, "reason": ""}
    summary = quality.get("summary", {}) or {}
    if summary.get("not_run"):
        return {"available": False, "reason": str(summary["not_run"])}
    path = Path(quality["report"]) if quality.get("report") else None
    if path is None or not path.is_file():
        scalars = [(key, value) for key, value in _flatten(summary) if not isinstance(value, (list, dict))]
        tables = [{"caption": "Quality and privacy stage summary (as recorded in the run).",
                   "header": ["metric", "value"], "rows": [(k, _num(v)) for k, v in scalars]}] if scalars else []
        return {"available": True, "tables": tables, "figures": []}
    report = read_json(path)
    tables: list[dict[str, Any]] = []
    metrics = [m for m in report.get("metrics", []) if m.get("class") == "all"] or report.get("metrics", [])
    if metrics:
        tables.append({"caption": "Fidelity and diversity of the synthetic set, each beside its real-vs-real reference "
                                  "(real half B against real half A of the generator's training sample: what 'good' "
                                  "looks like in this domain). Classes pooled.",
                       "header": ["metric", "class", "synthetic", "real-vs-real reference", "better"],
                       "rows": [(m.get("label") or m.get("metric"), m.get("class", ""),
                                 _pm(m.get("synthetic"), m.get("synthetic_std"), _is_kid(m)),
                                 _pm(m.get("reference"), m.get("reference_std"), _is_kid(m)),
                                 {True: "higher", False: "lower"}.get(m.get("higher_is_better"), "compare"))
                                for m in metrics]})
    memo = report.get("memorisation") or {}
    if memo.get("per_class"):
        tables.append({"caption": f"Memorisation: synthetic images closer to a training image than "
                                  f"{100 * float(memo.get('quantile', 0)):.0f}% of real-to-real neighbour distances "
                                  f"(flagged {pct(memo.get('flagged_fraction'))} overall).",
                       "header": ["class", "synthetic images", "flagged", "fraction"],
                       "rows": [(name, v.get("images", ""), v.get("flagged", ""), pct(v.get("fraction")))
                                for name, v in memo["per_class"].items()]})
    labels = report.get("label_consistency")
    if labels:
        agreement = labels.get("per_class_agreement") or {}
        tables.append({"caption": f"Label agreement: a classifier trained on real images labels the synthetic images "
                                  f"(overall {pct(labels.get('overall_agreement'))}, CAS {_num(labels.get('cas'))}).",
                       "header": ["class", "agreement"],
                       "rows": [(name, pct(value)) for name, value in agreement.items()]})
    gate = quality.get("gate") or {}
    if gate.get("checks"):
        tables.append({"caption": f"Quality gate ({gate.get('action', '')}): "
                                  f"{'passed' if gate.get('passed') else 'FAILED'}.",
                       "header": ["check", "value", "required", "passed"],
                       "rows": [(c.get("metric"), _num(c.get("value")), f"{c.get('op', '')} {c.get('threshold', '')}",
                                 {True: "yes", False: "NO", None: "not measured"}.get(c.get("passed"), ""))
                                for c in gate["checks"]]})
    figures = []
    for pair in memo.get("closest_pairs", [])[:8]:
        image = path.parent / str(pair.get("image", ""))
        if image.is_file() and image.suffix == ".png":
            figures.append({"src": "data:image/png;base64," + base64.b64encode(image.read_bytes()).decode("ascii"),
                            "alt": f"Closest pair {pair.get('rank')}: synthetic image {pair.get('synthetic')} (left) "
                                   f"and its nearest training image {pair.get('training')} (right), class "
                                   f"{pair.get('label')}",
                            "caption": f"#{pair.get('rank')} {pair.get('label')}: synthetic (left) vs nearest training "
                                       f"image (right), pixel distance {_num(pair.get('pixel_distance'))}"
                                       f"{' - flagged as memorised' if pair.get('memorised') else ''}."})
    return {"available": True, "tables": tables, "figures": figures}


def _generator_hash(gen: dict[str, Any]) -> str:
    summary = gen.get("summary") or {}
    return str(gen.get("pipeline_hash") or summary.get("pipeline_hash") or gen.get("checkpoint_hash")
               or summary.get("checkpoint_hash") or "")


def _is_kid(metric: dict[str, Any]) -> bool:
    return "kid" in str(metric.get("metric", "")).lower()


def _pm(value: Any, std: Any, spread_expected: bool = False) -> str:
    """``value ± std``; where a spread is expected (KID over subsets) but there is none, say so ("± n/a")."""
    if value is None:
        return ""
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        return f"{_num(value)} ± {_num(std)}"
    return f"{_num(value)} ± n/a (one subset)" if spread_expected else _num(value)


def classifiers_section(results: pd.DataFrame | None, stages: dict[str, Any],
                        config: DomainConfig | None = None) -> dict[str, Any]:
    if results is None or results.empty:
        return {"available": False}
    folds = results[results["fold"] != "ensemble"]
    ensemble = results[results["fold"] == "ensemble"]
    rows = []
    for (arm, architecture), group in folds.groupby(["arm", "architecture"], sort=True):
        ens = ensemble[(ensemble["arm"] == arm) & (ensemble["architecture"] == architecture)]
        e = ens.iloc[0] if not ens.empty else None
        rows.append({"arm": arm, "architecture": architecture,
                     "acc": mean_std(group["test_accuracy"], percent=True), "f1": mean_std(group["f1_macro"]),
                     "auc": mean_std(group["roc_auc_ovr"]),
                     "ens_acc": pct(e["test_accuracy"]) if e is not None else "",
                     "ens_acc_raw": repr(float(e["test_accuracy"])) if e is not None else "",
                     "ens_f1": f"{e['f1_macro']:.3f}" if e is not None else "",
                     "ens_f1_raw": repr(float(e["f1_macro"])) if e is not None else "",
                     "ens_auc": _num(e["roc_auc_ovr"]) if e is not None else "",
                     "weights": "pretrained" if bool(group["pretrained_used"].all()) else "from scratch",
                     "stopped": ", ".join(sorted({str(s) for s in group["stopped_reason"]}))})
    fits_dir = _fits_dir(stages)
    class_names = _class_names(results)
    confusions, curves = [], []
    for row in chosen_ensembles(results, config).itertuples():
        matrix = np.array(json.loads(row.confusion_matrix))
        confusions.append(_confusion_figure(matrix, class_names, row.arm, row.architecture))
        histories = []
        for key in str(row.fit_key).split(","):
            path = fits_dir / key / "history.json" if fits_dir else None
            if path is not None and path.is_file():
                histories.append(read_json(path))
        if histories:
            curves.append(_curves_figure(histories, row.arm, row.architecture))
    notes = list((stages.get("classifiers", {}).get("summary") or {}).get("notes", []))
    return {"available": True, "rows": rows, "folds": int(folds["fold"].nunique()), "confusions": confusions,
            "curves": curves, "notes": notes}


def _class_names(results: pd.DataFrame) -> list[str]:
    return [c[len("support["):-1] for c in results.columns if c.startswith("support[")]


def _confusion_figure(matrix: np.ndarray, class_names: list[str], arm: str, architecture: str) -> dict[str, str]:
    k = len(matrix)
    fig = Figure(figsize=(1.2 + 0.75 * k, 1.0 + 0.7 * k), dpi=90)
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    names = [_t(n) for n in (class_names if len(class_names) == k else map(str, range(k)))]
    ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = matrix.max() if matrix.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=8,
                    color="white" if matrix[i, j] > top / 2 else "black")
    fig.tight_layout()
    return {"src": png_uri(fig), "alt": f"Confusion matrix heat map of {arm} / {architecture} (fold ensemble) on the "
                                        f"held-out real images: rows true class, columns predicted class",
            "caption": f"{arm} / {architecture}: {int(np.trace(matrix))} of {int(matrix.sum())} correct."}


def _curves_figure(histories: list[list[dict[str, Any]]], arm: str, architecture: str) -> dict[str, str]:
    fig = Figure(figsize=(5.0, 2.6), dpi=90)
    ax = fig.subplots()
    for fold, history in enumerate(histories):
        epochs = [h["epoch"] for h in history]
        line = ax.plot(epochs, [h["train_loss"] for h in history], lw=1, label=f"fold {fold} train")[0]
        ax.plot(epochs, [h["val_loss"] for h in history], lw=1, ls="--", color=line.get_color(),
                label=f"fold {fold} validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return {"src": png_uri(fig), "alt": f"Training (solid) and validation (dashed) loss per epoch for each fold of "
                                        f"{arm} / {architecture}",
            "caption": f"{arm} / {architecture}: training (solid) and validation (dashed) loss per fold."}


def explanations_section(stages: dict[str, Any], share: bool = False) -> dict[str, Any]:
    """LIME per arm: the evidence table, each explained image's row and overlays (synthetic only when sharing)."""
    from reports.lime_explain import load_explanations

    info = stages.get("explain")
    if not info:
        return {"available": False, "reason": "this run has no explanation stage"}
    if not info.get("directory"):
        return {"available": False, "reason": str((info.get("summary") or {}).get("not_run", ""))}
    directory = Path(info["directory"])
    if not (directory / "explanations.json").is_file():
        return {"available": False, "reason": f"explanation files missing from {directory}"}
    records, arrays, comparison, summary = load_explanations(directory)
    settings = summary.get("settings", {})
    class_names = summary.get("class_names", [])
    comp_rows = [{"arm": r["arm"], "class": r["class"], "n_real": int(r["n_real"]), "n_synthetic": int(r["n_synthetic"]),
                  "correlation": _num(r["correlation"]), "correlation_raw": repr(float(r["correlation"])),
                  "interval": _evidence_interval(r),
                  "iou": _num(r["iou_top"]), "iou_raw": repr(float(r["iou_top"]))}
                 for r in comparison.to_dict(orient="records")]
    arms = []
    for arm in summary.get("arms", []):
        model = summary.get("models", {}).get(arm, {})
        mine = [r for r in records if r["arm"] == arm]
        mine.sort(key=lambda r: (class_names.index(r["true_label"]) if r["true_label"] in class_names else 0,
                                 r["source"], r["index"]))
        rows, figures = [], []
        for number, r in enumerate(mine, start=1):
            r["number"] = number
            rows.append({"number": number, "source": r["source"], "kind": r["kind"], "true": r["true_label"],
                         "predicted": r["predicted_label"], "confidence": pct(r["confidence"]),
                         "top": ", ".join(f"{w:+.2g}" for w in r["top_weights"]),
                         "share": pct(r["positive_share"]), "score": _num(r["score"])})
        for name in class_names:
            group = [r for r in mine if r["true_label"] == name and not (share and r["source"] != "synthetic")]
            if group:
                figures.append(_overlay_figure(group, arrays, arm, name))
        mean_maps = _mean_maps_figure(comparison, arrays, arm)
        arms.append({"arm": arm, "model": f"{model.get('architecture', '?')} fold {model.get('fold', '?')}, chosen on "
                                          f"validation (validation accuracy {_num(model.get('val_accuracy'))}); "
                                          f"held-out macro-F1 {_num(model.get('f1_macro'))}",
                     "rows": rows, "figures": figures, "mean_maps": mean_maps})
    return {"available": True, "comparison": comp_rows, "arms": arms, "top_k": settings.get("top_k", ""),
            "top_percent": round(100 * float(settings.get("top_fraction", 0.2))),
            "settings": f"{settings.get('num_samples', '?')} perturbed samples, {settings.get('segmentation', '?')} "
                        f"superpixels (~{settings.get('n_segments', '?')}), seed {summary.get('seed', '?')}",
            "reason": ""}


def _evidence_interval(row: dict[str, Any]) -> str:
    """The correlation's 95% bootstrap interval, or why there is none (too few images to say anything)."""
    low, high = row.get("correlation_low"), row.get("correlation_high")
    if low is None or high is None or (isinstance(low, float) and math.isnan(low)):
        return (f"sample too small ({int(row['n_real'])} real, {int(row['n_synthetic'])} synthetic images; "
                f"an interval needs at least 5 of each)")
    return f"{_num(low)} to {_num(high)}"


def _overlay_figure(group: list[dict[str, Any]], arrays: dict[str, np.ndarray], arm: str, label: str) -> dict[str, str]:
    fig = Figure(figsize=(5.4, 1.75 * len(group)), dpi=80)
    axes = fig.subplots(len(group), 3, squeeze=False)
    for row, record in enumerate(group):
        i = record["index"]
        image, segments, weights = arrays["images"][i], arrays["segments"][i], arrays["maps_pred"][i]
        gray = image[..., 0] if np.all(image[..., 0] == image[..., 1]) else None
        shown = gray if gray is not None else image
        scale = float(np.abs(weights).max()) or 1.0
        mask = np.isin(segments, record["top_segments"])
        for col in range(3):
            ax = axes[row][col]
            ax.set_axis_off()
            ax.imshow(shown, cmap="gray" if gray is not None else None, vmin=0, vmax=255, interpolation="nearest")
        axes[row][1].imshow(weights, cmap="bwr", vmin=-scale, vmax=scale, alpha=0.55, interpolation="nearest")
        axes[row][2].contour(mask.astype(float), levels=[0.5], colors=["#ffd400"], linewidths=1.5)
        axes[row][0].set_title(f"#{record['number']}", fontsize=8, loc="left")
    axes[0][0].set_title(f"#{group[0]['number']} image", fontsize=8, loc="left")
    axes[0][1].set_title("LIME weights", fontsize=8)
    axes[0][2].set_title("top superpixels", fontsize=8)
    fig.subplots_adjust(wspace=0.04, hspace=0.18)
    numbers = ", ".join(f"#{r['number']} ({r['source']})" for r in group)
    return {"src": png_uri(fig),
            "alt": f"LIME explanations for true class {label} under arm {arm}, images {numbers}: each row shows the "
                   f"image, its superpixel weights for the predicted class as a red/blue heat map, and the outline "
                   f"of the top superpixels",
            "caption": f"{arm}, true class {label}: images {numbers} (see the table above for labels and confidence)."}


def _mean_maps_figure(comparison: pd.DataFrame, arrays: dict[str, np.ndarray], arm: str) -> dict[str, str] | None:
    rows = [(i, r) for i, r in enumerate(comparison.to_dict(orient="records")) if r["arm"] == arm]
    if not rows or "mean_real" not in arrays:
        return None
    fig = Figure(figsize=(4.4, 2.1 * len(rows)), dpi=80)
    axes = fig.subplots(len(rows), 2, squeeze=False)
    for r, (i, record) in enumerate(rows):
        for c, key in enumerate(("mean_real", "mean_synthetic")):
            ax = axes[r][c]
            ax.set_axis_off()
            data = arrays[key][i]
            if np.isfinite(data).any():
                ax.imshow(np.nan_to_num(data), cmap="bwr", vmin=-1, vmax=1, interpolation="nearest")
            ax.set_title(f"{_t(record['class'])[:20]}: {'real' if c == 0 else 'synthetic'}", fontsize=7)
    fig.subplots_adjust(wspace=0.05, hspace=0.3)
    return {"src": png_uri(fig), "alt": f"Mean true-class LIME importance maps of arm {arm}, real images (left) and "
                                        f"synthetic images (right), one row per class",
            "caption": f"{arm}: mean importance map per class, real (left) vs synthetic (right); red supports the true "
                       f"class."}


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
             ("generator hash", _generator_hash(gen)),
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


# ----------------------------------------------------------------------------------------------
# Formatting helpers


def png_uri(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def pct(value: Any) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return ""
    return "" if math.isnan(value) else f"{100 * value:.1f}%"


def mean_std(values: pd.Series, percent: bool = False) -> str:
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return ""
    scale, unit = (100.0, "") if percent else (1.0, "")
    mean, std = scale * values.mean(), scale * (values.std(ddof=1) if len(values) > 1 else 0.0)
    return f"{mean:.1f} ± {std:.1f}{unit}" if percent else f"{mean:.3f} ± {std:.3f}"


def _num(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "n/a" if math.isnan(value) else f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _t(text: Any) -> str:
    """A user string for matplotlib text: '$' would start mathtext."""
    return str(text).replace("$", r"\$")


def _flatten(payload: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in payload.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.extend(_flatten(value, name + "."))
        else:
            out.append((name, value))
    return out


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("synth-augment")
    except Exception:
        return "unknown"


__all__ = ["ReportOutput", "report_stage", "latest_run_dir", "render_report", "build_context"]
