"""The quality and privacy section, from the quality stage's quality.json and gate."""

from __future__ import annotations

import base64
import math
from pathlib import Path
from typing import Any

from pipeline.store import read_json
from reports.format import flatten, num, pct

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
        scalars = [(key, value) for key, value in flatten(summary) if not isinstance(value, (list, dict))]
        tables = [{"caption": "Quality and privacy stage summary (as recorded in the run).",
                   "header": ["metric", "value"], "rows": [(k, num(v)) for k, v in scalars]}] if scalars else []
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
                                 plus_minus(m.get("synthetic"), m.get("synthetic_std"), is_kid(m)),
                                 plus_minus(m.get("reference"), m.get("reference_std"), is_kid(m)),
                                 {True: "higher", False: "lower"}.get(m.get("higher_is_better"), "compare"))
                                for m in metrics]})
    memo = report.get("memorisation") or {}
    if memo.get("per_class"):
        tables.append({"caption": f"Memorisation: synthetic images closer to a training image than "
                                  f"{100 * float(memo.get('quantile', 0)):.0f}% of real-to-real neighbour distances "
                                  f"(flagged {pct(memo.get('flagged_fraction'))} overall)." + _copy_ratio(memo),
                       "header": ["class", "synthetic images", "flagged", "fraction"],
                       "rows": [(name, v.get("images", ""), v.get("flagged", ""), pct(v.get("fraction")))
                                for name, v in memo["per_class"].items()]})
    labels = report.get("label_consistency")
    if labels:
        agreement = labels.get("per_class_agreement") or {}
        tables.append({"caption": f"Label agreement: a classifier trained on real images labels the synthetic images "
                                  f"(overall {pct(labels.get('overall_agreement'))}, CAS {num(labels.get('cas'))}).",
                       "header": ["class", "agreement"],
                       "rows": [(name, pct(value)) for name, value in agreement.items()]})
    gate = quality.get("gate") or {}
    if gate.get("checks"):
        tables.append({"caption": f"Quality gate ({gate.get('action', '')}): "
                                  f"{'passed' if gate.get('passed') else 'FAILED'}.",
                       "header": ["check", "value", "required", "passed"],
                       "rows": [(c.get("metric"), num(c.get("value")), f"{c.get('op', '')} {c.get('threshold', '')}",
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
                                       f"image (right), pixel distance {num(pair.get('pixel_distance'))}"
                                       f"{' - flagged as memorised' if pair.get('memorised') else ''}."})
    return {"available": True, "tables": tables, "figures": figures}


def is_kid(metric: dict[str, Any]) -> bool:
    return "kid" in str(metric.get("metric", "")).lower()


def plus_minus(value: Any, std: Any, spread_expected: bool = False) -> str:
    """``value ± std``; where a spread is expected (KID over subsets) but there is none, say so ("± n/a")."""
    if value is None:
        return ""
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        return f"{num(value)} ± {num(std)}"
    return f"{num(value)} ± n/a (one subset)" if spread_expected else num(value)


def _copy_ratio(memo: dict[str, Any]) -> str:
    """Gu et al.'s criterion per space: the median nearest / second-nearest ratio and the share under 1/3."""
    parts = [f"{name}: median ratio {float(space['nn_ratio_median']):.2f}, {pct(space.get('copy_fraction'))} under 1/3"
             for name, space in (memo.get("spaces") or {}).items() if space.get("nn_ratio_median") is not None]
    return (" Nearest / second-nearest training-image distance (Gu et al.; a copy is under 1/3, a fresh sample "
            "near 1): " + "; ".join(parts) + ".") if parts else ""
