"""Issue 21's options, one change each against a base configuration, decided on the development images only.

    python benchmarks/ablation_diversity.py --domain brain-mri --data ../shared/data/brain-mri \
        --runs-root /tmp/ablation-dev-runs --variants interval,cads

The base is ablation row 10 (the cpu-medium budget with model selection on validation accuracy, on its
2000-step generator lineage) with every arm a data team needs: synthetic, real, real+aug, real+synthetic,
real+aug+synthetic and balance. Each variant changes ONE thing (a sampling option, the filter, the count);
stages are cached by content, so a variant trains only what it changes (a sampling option: synthesis and the
synthetic-using fits; the generator and the real arms are reused). Every variant is scored on the
development half of the held-out side; decisions compare each variant with the base on those images (exact or
clustered McNemar, paired bootstrap CI, Holm across every comparison made). The test half is never read
here: the configuration that wins is scored on it once, by ablation.py's final row. Also recorded per variant:
the quality stage's improved precision / recall (fidelity and diversity against the real sample) and label
agreement. Writes benchmarks/results/ablation/diversity-<domain>.{json,md}; ``--seed`` repeats on another seed.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.ablation import (DEV_FRACTION, RESULTS_DIR, arm_table, computed_minutes, holm_family,  # noqa: E402
                                 row_config, run_grid, set_predictions)
from flows.run import run_domain  # noqa: E402
from pipeline.config import deep_merge, load_domain_config  # noqa: E402
from pipeline.store import atomic_write_json, atomic_write_text, read_json, read_table  # noqa: E402

BASE_ROW = 10
ARMS = ["synthetic", "real", "real+aug", "real+synthetic", "real+aug+synthetic", "balance"]
SYNTHETIC_USING = ("synthetic", "real+synthetic", "real+aug+synthetic", "balance")
# name -> (what changes, the override); one change each against the base
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "base": ("row 10 with every arm", {}),
    "interval": ("guidance only for sigma in (0.28, 5.42] (Kynkaanniemi et al.)",
                 {"synthesis": {"guidance_interval": [0.28, 5.42]}}),
    "range": ("per-image guidance drawn from U(1, 3)", {"synthesis": {"guidance_range": [1.0, 3.0]}}),
    "cads": ("CADS on the class embedding, s = 0.25, tau (0.6, 0.9)", {"synthesis": {"cads_noise_scale": 0.25}}),
    "filter": ("drop images the reference assigns to another class (out of fold)",
               {"synthesis": {"filter": "reference"}}),
    "x2": ("twice the real sample's count per class", {"synthesis": {"per_class_multiple": 2.0}}),
    "x3": ("three times the real sample's count per class", {"synthesis": {"per_class_multiple": 3.0}}),
    "autoguidance": ("autoguidance by the 500-step EMA weights (a from-scratch 2000-step generator keeping them)",
                     {"generator": {"guide_step": 500}, "synthesis": {"guidance_method": "autoguidance"}}),
}


def variant_config(domain: str, name: str, runs_root: str, seed: int | None = None) -> Any:
    base = row_config(domain, BASE_ROW - 1, runs_root, DEV_FRACTION, seed).to_dict()
    merged = deep_merge(base, {"classifiers": {"arms": ARMS}})
    merged = deep_merge(merged, VARIANTS[name][1])
    merged.pop("name", None)
    return load_domain_config(domain, merged.pop("profile", "cpu"), merged)


def quality_of(record: Any) -> dict[str, Any]:
    """Improved precision / recall (domain features) and label agreement of the variant's synthetic set."""
    stage = record.stages.get("quality")
    if not stage:
        return {}
    report = read_json(Path(stage["report"]))
    out: dict[str, Any] = {}
    metrics = report.get("metrics", [])
    domain = [m for m in metrics if m.get("extractor") == "domain"]  # the domain extractor when there is one
    for metric in domain or metrics:
        if metric.get("metric") in ("precision", "recall") and metric.get("class") in ("all", "", None):
            out.setdefault(metric["metric"], round(float(metric["synthetic"]), 3))
            out.setdefault(f"{metric['metric']}_real_vs_real", round(float(metric["reference"] or 0), 3))
    labels = report.get("label_consistency") or {}
    out["label_agreement"] = labels.get("overall_agreement")
    memorisation = report.get("memorisation") or {}
    spaces = memorisation.get("spaces") or {}
    space = spaces.get("feature") or spaces.get("pixel") or {}  # the feature space when an extractor ran
    out["flagged_fraction"] = memorisation.get("flagged_fraction")
    out["copy_fraction"] = space.get("copy_fraction")  # Gu et al.: nearest / second-nearest under 1/3
    out["nn_ratio_median"] = space.get("nn_ratio_median")
    return out


def real_counts(split_path: str) -> dict[str, int]:
    """Images per class in the real training sample: the counts ``balance`` fills up to and x2/x3 multiply."""
    table = read_table(split_path)
    return {str(k): int(v) for k, v in table[table["split"] == "train"].groupby("label").size().items()}


def dev_recall(results: Any) -> dict[str, dict[str, float]]:
    """Per arm, the fold ensemble's development recall of every class (the smallest classes are what
    ``balance`` is for; macro accuracy hides them)."""
    ensemble = results[results["fold"].astype(str) == "ensemble"]
    columns = [c for c in ensemble.columns if c.startswith("dev_recall[")]
    return {str(row["arm"]): {c[len("dev_recall["):-1]: round(float(row[c]), 4) for c in columns}
            for _, row in ensemble.iterrows()}


def run_variant(domain: str, name: str, data: str, runs_root: str, quiet: bool, seed: int | None) -> dict[str, Any]:
    config = variant_config(domain, name, runs_root, seed)
    record = run_domain(config, data, progress=not quiet)
    results = read_table(record.stages["classifiers"]["results"])
    synthesis = record.stages["synthesis"]["summary"]
    key = name if seed is None else f"{name}-seed{seed}"
    run_grid(record.run_dir, grid_path(domain, key), f"{domain} {key}: {VARIANTS[name][0]} (real 20% sample vs synthetic)")
    return {"variant": name, "change": VARIANTS[name][0], "override": VARIANTS[name][1], "seed": config.seed,
            "dev": arm_table(results, "dev"), "dev_recall": dev_recall(results),
            "real_counts": real_counts(record.stages["split"]["split"]),
            "quality": quality_of(record), "filter": synthesis.get("filter"),
            "images": synthesis.get("images"), "compute_minutes": computed_minutes(record),
            "run_dir": str(record.run_dir)}


def grid_path(domain: str, key: str) -> Path:
    return RESULTS_DIR / f"diversity-{domain}-{key}-grid.png"


def decisions(payload: dict[str, Any], resamples: int = 2000) -> list[dict[str, Any]]:
    """Each variant against the base on the development images, per synthetic-using arm, Holm across all."""
    from reports.paired import compare

    raw, meta = {}, {}
    for key, row in payload["variants"].items():
        base = payload["variants"].get(_base_of(key))
        if row["variant"] == "base" or base is None:
            continue
        sets = set_predictions(base["run_dir"], "dev"), set_predictions(row["run_dir"], "dev")
        if not all(sets):
            continue
        if not np.array_equal(sets[0]["labels"], sets[1]["labels"]):
            raise ValueError(f"{key} and {_base_of(key)} were scored on different development images; a paired "
                             "test needs the same images (same domain, split seed and dev_fraction)")
        for arm in SYNTHETIC_USING:
            if arm in sets[0]["preds"] and arm in sets[1]["preds"]:
                label = f"{key} | {arm}"
                raw[label] = compare(sets[0]["labels"], sets[0]["preds"][arm], sets[1]["preds"][arm], resamples,
                                     int(row["seed"]), clusters=sets[0]["clusters"])
                meta[label] = {"variant": key, "arm": arm}
    return holm_family(raw, meta, lambda m: f"{m['variant']} vs base, {m['arm']}")


def against_classic_augmentation(payload: dict[str, Any], resamples: int = 2000) -> list[dict[str, Any]]:
    """Within each variant, every arm that adds synthetic images against real+aug on the development images
    (the question a data team has: does synthetic data add anything beyond classic augmentation?), Holm
    across every comparison made. Reads the same files as ``decisions``; the test half is not read."""
    from reports.paired import compare

    raw, meta = {}, {}
    for key, row in payload["variants"].items():
        sets = set_predictions(row["run_dir"], "dev")
        if not sets or "real+aug" not in sets["preds"]:
            continue
        for arm in SYNTHETIC_USING:
            if arm in sets["preds"]:
                label = f"{key} | {arm}"
                raw[label] = compare(sets["labels"], sets["preds"]["real+aug"], sets["preds"][arm], resamples,
                                     int(row["seed"]), clusters=sets["clusters"])
                meta[label] = {"variant": key, "arm": arm}
    return holm_family(raw, meta, lambda m: f"{m['variant']}: {m['arm']} vs real+aug")


def _base_of(key: str) -> str:
    return "base" + (key[key.index("-seed"):] if "-seed" in key else "")


def markdown(domain: str, payload: dict[str, Any]) -> str:
    head = "| variant | change | " + " | ".join(f"{a} dev acc" for a in ARMS) + \
           " | precision / recall (real-vs-real) | label agreement | compute min |"
    lines = [f"# Diversity options: {domain} (development split only)", "",
             "Commands: " + "; ".join(f"`{c}`" for c in payload.get("commands", [])), "",
             f"Each variant changes one thing against the base (ablation row {BASE_ROW} with every arm). "
             "Accuracy of the fold ensemble on the development half of the held-out side; the test half is not "
             "read. One seed per variant unless listed again as <variant>-seed<S>.", "", head,
             "|" + "---|" * (len(ARMS) + 5)]
    for key, row in payload["variants"].items():
        cells = [f"{row['dev'][a]['accuracy']:.3f}" if a in row["dev"] else "-" for a in ARMS]
        q = row.get("quality") or {}
        pr = (f"{q.get('precision', float('nan')):.2f} / {q.get('recall', float('nan')):.2f} "
              f"({q.get('precision_real_vs_real', float('nan')):.2f} / {q.get('recall_real_vs_real', float('nan')):.2f})"
              if q else "-")
        agreement = f"{q['label_agreement']:.3f}" if q.get("label_agreement") is not None else "-"
        lines.append(f"| {key} | {row['change']} | " + " | ".join(cells) + f" | {pr} | {agreement} | "
                     f"{row['compute_minutes']:.1f} |")
    lines += _smallest_class_table(payload) + _memorisation_lines(payload) + _filter_lines(payload)
    lines += ["", "## Sample grids (real 20% sample vs the first synthetic images per class; the same indices in "
              "every variant)", ""]
    lines += [f"- {key}: {grid_path(domain, key).name}" for key in payload["variants"]
              if grid_path(domain, key).is_file()] or ["- none written yet"]
    lines += ["", "## Decisions (development images, each variant vs the base, Holm across every comparison)", ""]
    lines += [f"- {d['words']}" for d in payload.get("decisions", [])] or ["- none yet"]
    lines += ["", "## Beyond classic augmentation (development images, each synthetic-using arm vs real+aug in the "
              "same variant, Holm across every comparison)", ""]
    lines += [f"- {d['words']}" for d in payload.get("against_real_aug", [])] or ["- none yet"]
    return "\n".join(lines) + "\n"


def _smallest_class_table(payload: dict[str, Any]) -> list[str]:
    """Development recall of the class with the fewest real training images, per variant and arm."""
    rows = [(key, row) for key, row in payload["variants"].items() if row.get("dev_recall") and row.get("real_counts")]
    if not rows:
        return []
    lines = ["", "## Development recall of the smallest class (real training images in brackets)", "",
             "| variant | class | " + " | ".join(ARMS) + " |", "|" + "---|" * (len(ARMS) + 2)]
    for key, row in rows:
        counts = row["real_counts"]
        smallest = min(counts, key=lambda name: (counts[name], name))
        cells = [f"{row['dev_recall'][a][smallest]:.3f}" if smallest in row["dev_recall"].get(a, {}) else "-"
                 for a in ARMS]
        lines.append(f"| {key} | {smallest} ({counts[smallest]}) | " + " | ".join(cells) + " |")
    return lines


def _memorisation_lines(payload: dict[str, Any]) -> list[str]:
    """Copies, for the options that start from real images: the flagged share and Gu et al.'s ratio."""
    rows = [(key, row["quality"]) for key, row in payload["variants"].items()
            if (row.get("quality") or {}).get("flagged_fraction") is not None]
    if not rows:
        return []
    def number(value: Any) -> str:
        return "-" if value is None else f"{value:.3f}"
    return ["", "## Memorisation (synthetic vs the real training sample)", "",
            "| variant | flagged by the threshold | copies (nearest / second nearest < 1/3) | median ratio |",
            "|---|---|---|---|"] + [f"| {key} | {number(q['flagged_fraction'])} | {number(q.get('copy_fraction'))} | "
                                    f"{number(q.get('nn_ratio_median'))} |" for key, q in rows]


def _filter_lines(payload: dict[str, Any]) -> list[str]:
    """What the reference filter dropped, per class (generated / dropped / kept)."""
    rows = [(key, row["filter"]) for key, row in payload["variants"].items() if row.get("filter")]
    if not rows:
        return []
    lines = ["", "## Filter: what was dropped (generated / dropped / kept per class)", ""]
    for key, per_class in rows:
        parts = [f"{name} {c.get('generated', '?')} / {c.get('dropped', '?')} / {c.get('kept', '?')}"
                 for name, c in per_class.items()]
        lines.append(f"- {key}: " + "; ".join(parts))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--runs-root", required=True)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--redo", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(sorted(unknown))}; known: {', '.join(VARIANTS)}")
    if not Path(args.data).exists():
        print(f"ablation_diversity: skipped: dataset not found at {args.data!r}")
        return 0
    out = RESULTS_DIR / f"diversity-{args.domain}.json"
    payload = json.loads(out.read_text()) if out.is_file() else {"domain": args.domain, "variants": {}, "commands": []}
    command = "python benchmarks/ablation_diversity.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    for name in args.variants.split(","):
        key = name if args.seed is None else f"{name}-seed{args.seed}"
        if key in payload["variants"] and not args.redo:
            print(f"{key}: already in {out} (use --redo)")
            continue
        payload["variants"][key] = run_variant(args.domain, name, args.data, args.runs_root, args.quiet, args.seed)
        payload["decisions"] = decisions(payload)
        payload["against_real_aug"] = against_classic_augmentation(payload)
        if command not in payload["commands"]:
            payload["commands"].append(command)
        atomic_write_json(out, payload)
        atomic_write_text(out.with_suffix(".md"), markdown(args.domain, payload))
    print(markdown(args.domain, payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
