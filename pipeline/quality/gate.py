"""The quality gate and the filters: applied on every call from the stage's stored tables, so changing a
threshold recomputes nothing. Writes ``gate.json`` (``pipeline.quality.schema.GateRecord``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import DomainConfig, hash_payload
from pipeline.errors import QualityGateError
from pipeline.quality.schema import GateRecord
from pipeline.store import atomic_write_json, atomic_write_table, read_json, read_table


def pick_metric(metrics: pd.DataFrame, metric: str, extractor: str, klass: str = "all") -> dict[str, float] | None:
    row = metrics[(metrics["metric"] == metric) & (metrics["extractor"] == extractor) & (metrics["class"] == klass)]
    if row.empty:
        return None
    return {"synthetic": float(row["synthetic"].iloc[0]), "reference": float(row["reference"].iloc[0])}


def gate_checks(config: DomainConfig, report: dict[str, Any], metrics: pd.DataFrame) -> list[dict[str, Any]]:
    g = config.quality.gate
    checks = []

    def add(metric: str, value: float | None, threshold: float | None, op: str) -> None:
        if threshold is None:
            return
        if value is None or not np.isfinite(value):
            checks.append({"metric": metric, "value": None, "threshold": threshold, "op": op, "passed": None})
            return
        ok = value >= threshold if op == ">=" else value <= threshold
        checks.append({"metric": metric, "value": float(value), "threshold": threshold, "op": op, "passed": bool(ok)})

    lc = report.get("label_consistency")
    add("label agreement (CAS, quality.gate.min_label_agreement)", lc["cas"] if lc else None, g.min_label_agreement, ">=")
    add("memorised fraction (quality.gate.max_memorised_fraction)", report["memorisation"]["flagged_fraction"],
        g.max_memorised_fraction, "<=")
    fd = pick_metric(metrics, "frechet_distance", "domain")
    ratio = fd["synthetic"] / fd["reference"] if fd and fd["reference"] > 0 else None
    add("Fréchet distance, domain features: synthetic / real-vs-real (quality.gate.max_domain_fd_ratio)", ratio,
        g.max_domain_fd_ratio, "<=")
    recall = pick_metric(metrics, "recall", "domain")
    add("improved recall, domain features (quality.gate.min_domain_recall)", recall["synthetic"] if recall else None,
        g.min_domain_recall, ">=")
    return checks


def apply_filters_and_gate(config: DomainConfig, directory: Path, synthesis_manifest: Path) -> tuple[Path, dict[str, Any]]:
    """Write gate.json; return the manifest classifiers should use; raise QualityGateError on a failed stop gate."""
    q = config.quality
    report = read_json(directory / "quality.json")
    per_image = read_table(directory / "per_image.parquet")
    metrics = read_table(directory / "metrics.parquet")
    drop_memorised = per_image["memorised"].to_numpy(bool) if q.drop_memorised else np.zeros(len(per_image), bool)
    drop_label = np.zeros(len(per_image), bool)
    if q.label_filter_confidence is not None and per_image["predicted"].notna().any():
        drop_label = ((per_image["predicted"] != per_image["label"]) &
                      (per_image["confidence"] >= q.label_filter_confidence)).to_numpy(bool)
    dropped = drop_memorised | drop_label
    manifest_path = synthesis_manifest
    if dropped.any():
        source = pd.read_parquet(synthesis_manifest) if synthesis_manifest.suffix == ".parquet" \
            else pd.read_csv(synthesis_manifest)
        keep = ~source["sha256"].astype(str).isin(set(per_image.loc[dropped, "sha256"]))
        name = hash_payload({"drop_memorised": q.drop_memorised, "label_filter": q.label_filter_confidence})
        manifest_path = atomic_write_table(directory / f"filtered-{name}.parquet", source[keep].reset_index(drop=True))
    checks = gate_checks(config, report, metrics)
    failed = [c for c in checks if c["passed"] is False]
    messages = [f"quality gate: {c['metric']} = {c['value']:.4g}, required {c['op']} {c['threshold']}" for c in failed]
    messages += [f"quality gate: {c['metric']} could not be evaluated (not measured in this run)"
                 for c in checks if c["passed"] is None]
    gate = {"action": q.gate.action, "passed": not failed, "checks": checks, "messages": messages,
            "filter": {"drop_memorised": q.drop_memorised, "label_filter_confidence": q.label_filter_confidence,
                       "dropped": int(dropped.sum()), "dropped_memorised": int(drop_memorised.sum()),
                       "dropped_label": int(drop_label.sum()), "kept": int((~dropped).sum()),
                       "manifest": str(manifest_path)}}
    gate = GateRecord.model_validate(gate).model_dump(mode="json")
    atomic_write_json(directory / "gate.json", gate)
    if failed and q.gate.action == "stop":
        raise QualityGateError("; ".join(messages) + f" (quality.gate.action=stop; results in {directory})")
    return manifest_path, gate


def summary_lines(summary: dict[str, Any], gate: dict[str, Any]) -> list[str]:
    """A few lines for ``synth-augment run`` from the stage's summary and gate record."""
    s, lines = summary, []
    fd = s.get("domain_fd")
    if fd:
        lines.append(f"Fréchet distance, domain features: synthetic {fd['synthetic']:.3g} vs real-vs-real "
                     f"{fd['reference']:.3g}")
    if s.get("cas") is not None:
        ceiling = s.get("reference_cv_accuracy")
        lines.append(f"label agreement (CAS) {s['cas']:.3f}" + (f" (the reference classifier's cross-validated "
                                                                 f"accuracy on real images: {ceiling:.3f})"
                                                                 if ceiling is not None else ""))
    lines.append(f"memorised (near-copies of training images) {s['flagged_fraction']:.1%}")
    filt = gate["filter"]
    if filt["dropped"]:
        lines.append(f"dropped {filt['dropped']} synthetic images before classifiers "
                     f"(memorised {filt['dropped_memorised']}, confidently wrong label {filt['dropped_label']})")
    lines += gate["messages"]
    lines += [n for n in s.get("notes", []) if "skipped" in n]
    return lines
