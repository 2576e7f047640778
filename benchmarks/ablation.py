"""Ablation of issue 8's changes on a real dataset: what did each change buy on real images it never saw?

    python benchmarks/ablation.py --domain brain-mri --data ../shared/data/brain-mri --runs-root /tmp/ablation-runs

Rows are cumulative (each adds one change to the row above); every row runs the whole pipeline
through ``flows.run.run_domain`` and, because stages are cached by content, reuses whatever did
not change (the same generator across sampler rows, the same real-arm fits across generator rows).
Writes, after every finished row (so a partial run still leaves results):

    benchmarks/results/ablation/<domain>.json   per row: name, overrides, each arm's held-out ensemble
                                                accuracy and macro-F1 (and fold mean +- std), the selection
                                                signal of its synthetic set, compute minutes, the command
    benchmarks/results/ablation/<domain>.md     the table, the shrinks against the study, the notes
    benchmarks/results/ablation/<domain>-row<N>-grid.png   real vs synthetic samples (``--grids``)

``--rows 1,2`` runs some rows; ``--until generator`` only trains (resumable chunks: run it under
``timeout`` as often as needed). A row already in the JSON is kept unless ``--redo``.
Honesty: nothing is tuned on the test images. Rows run with a development split (``--dev-fraction``,
default 0.5: half of the held-out side, stratified and patient/near-duplicate-group aware): a row's
JSON holds a ``dev`` and a ``test`` object keyed by arm, decisions between rows read ``dev`` only, and
only the final configuration's ``test`` column is quoted. ``--seed`` repeats a row on another seed
(stored as row ``<N>-seed<S>``) where a decision is close. Rows 1-10 in the committed JSON predate the
development split (``arms`` only, chosen on held-out results): the .md marks them. Model selection
and the selection signal use the real 20% training sample only; every shrink relative to the study is
listed in the .md.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout, ahead of benchmarks/ (whose classifiers.py would shadow the package)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from pipeline.config import ClassifierConfig, DomainConfig, deep_merge, load_domain_config  # noqa: E402
from flows.run import run_domain  # noqa: E402
from pipeline.run_record import read_run_record  # noqa: E402
from pipeline.store import atomic_write_json, atomic_write_text, read_table  # noqa: E402

RESULTS_DIR = ROOT / "benchmarks" / "results" / "ablation"
_CLF_FIELDS = set(ClassifierConfig.model_fields)

# Shared by every row: the shrink of the study's protocol to a 2-core CPU (listed in the .md).
BASE: dict[str, Any] = {
    "generator": {"checkpoint_every": 100, "keep_checkpoints": 3},
    "synthesis": {"per_class": 50, "steps": 20, "select_per_class": 4,
                  "guidance_candidates": [1.0, 1.5, 2.0, 3.0], "strength_candidates": [0.4, 0.6, 0.8],
                  "checkpoint_candidates": 2},
    "split": {"cv_folds": 3},
    "classifiers": {"architectures": ["resnet18"], "image_size": 64},
}

# today's cpu-quick (flows/configs/budgets/cpu-quick.yaml before issue 8), spelled out
TODAY: dict[str, Any] = {
    "generator": {"train_steps": 500, "prediction_type": "epsilon", "snr_gamma": 0.0, "ema_power": 2.0 / 3.0},
    "synthesis": {"x0_clip": "clip", "timestep_spacing": "linspace", "guidance_scale": 2.0, "mode": "noise",
                  "select": False},
    "classifiers": {"arms": ["synthetic", "real", "real+aug", "real+synthetic"], "max_epochs": 8, "patience": 4,
                    "time_budget_s": 90, **({"budget": "epochs", "validation": "arm"} if "budget" in _CLF_FIELDS else {})},
}
STEP_BUDGET: dict[str, Any] = {"budget": "steps", "max_steps": 150, "min_steps": 75, "eval_every_steps": 25,
                               "patience_steps": 75, "validation": "real", "time_budget_s": None,
                               "arms": ["synthetic", "real", "real+aug", "real+synthetic", "synthetic->real"]}
# rows 4-6 leave out the synthetic->real arm (CPU budget); fits are keyed without the arm list, so the
# real arms of row 3 are reused as they are
SHORT_ARMS = ["synthetic", "real", "real+aug", "real+synthetic"]
ROWS: list[tuple[str, dict[str, Any]]] = [
    ("today's cpu-quick", TODAY),
    ("+ sampler fix (no intermediate x0 clip, trailing timesteps)",
     {"synthesis": {"x0_clip": "off", "timestep_spacing": "trailing"}}),
    ("+ equal step budgets & real validation", {"classifiers": STEP_BUDGET}),
    ("+ v-prediction, Min-SNR-5, EMA power 1", {"generator": {"prediction_type": "v_prediction", "snr_gamma": 5.0,
                                                              "ema_power": 1.0, "ema_decay": 0.99},
                                                "classifiers": {"arms": SHORT_ARMS}}),
    ("+ selected guidance & checkpoint", {"synthesis": {"select": True}}),
    ("+ real-seeded synthesis (selected strength)", {"synthesis": {"mode": "real-seeded"}}),
    ("+ longer generator (1000 steps, continued)", {"generator": {"train_steps": 1000},
                                                    "classifiers": {"arms": STEP_BUDGET["arms"]}}),
    # the diversity question rows 4-7 left: the synthetic arm trains on 50 images per class, the real
    # arm on ~220 per class; does the same generator's output help more when there is more of it?
    ("+ 200 synthetic images per class", {"synthesis": {"per_class": 200}}),
    # the cpu-medium budget (flows/configs/budgets/cpu-medium.yaml) on the rows' generator lineage: 2000
    # generator steps (continued), the shipped selection (8 images per class and candidate, 5 guidance
    # scales, reference 300 steps per fold) and the cpu profile's 400-step fits; EMA decay stays at the
    # lineage's 0.99 (cpu-medium says 0.995) so the 1000-step generator can be continued
    ("cpu-medium budget (generator 2000 steps, shipped selection, 400-step fits)",
     {"generator": {"train_steps": 2000, "checkpoint_every": 250},
      "synthesis": {"select_per_class": 8, "guidance_candidates": [1.0, 1.25, 1.5, 2.0, 3.0]},
      "classifiers": {"max_steps": 400, "min_steps": 200, "patience_steps": 100, "arms": STEP_BUDGET["arms"]}}),
    # row 9's synthetic fits all kept step 25-50 of 200-400 (lowest real-fold validation loss: a model
    # trained on synthetic images grows over-confident on real ones while its accuracy still rises);
    # does choosing the step by validation accuracy (ties -> lower loss) give that arm more?
    ("+ model selection on validation accuracy", {"classifiers": {"select_on": "val_accuracy",
                                                                 "arms": ["synthetic", "real", "real+synthetic"]}}),
]


DEV_FRACTION = 0.5


def row_config(domain: str, index: int, runs_root: str, dev_fraction: float = DEV_FRACTION,
               seed: int | None = None) -> DomainConfig:
    merged = deep_merge(BASE, {"runs_root": runs_root, "split": {"dev_fraction": dev_fraction},
                               **({"seed": seed} if seed is not None else {})})
    for _, delta in ROWS[:index + 1]:
        merged = deep_merge(merged, delta)
    if "budget" not in _CLF_FIELDS:  # the classifier options of issue 8 are not on this checkout yet
        merged["classifiers"] = {k: v for k, v in merged["classifiers"].items() if k in _CLF_FIELDS}
    return load_domain_config(domain, "cpu", merged)


def row_signal(config: DomainConfig, record: Any) -> dict[str, Any]:
    """The selection signal (CAS, intensity gap, score) of the row's synthetic set, vs the real sample only."""
    import torch

    from pipeline.generator.stage import real_sample
    from pipeline.image_tensors import domain_cache_dir, load_image_tensors
    from classifiers.reference import reference_stage
    from pipeline.quality.judge import classification_accuracy_score
    from pipeline.quality.signals import class_statistics, intensity_gap

    split_path = record.stages["split"]["split"]
    reference_out = reference_stage(config, split_path)
    reference = reference_out.load()
    manifest = read_table(record.stages["synthesis"]["manifest"])
    names = list(reference.class_names)
    images = load_image_tensors(manifest["path"].tolist(), manifest["sha256"].tolist(), config.data.mode,
                                config.generator.image_size, domain_cache_dir(config.runs_root, config.name), False)
    labels = [names.index(str(v)) for v in manifest["label"]]
    real = real_sample(config, split_path)
    gap = intensity_gap(class_statistics(images, torch.tensor(labels), names),
                        class_statistics(real.images, real.labels, names))
    seeds = manifest["seed_sha256"].tolist() if manifest.get("seed_sha256") is not None and \
        manifest["seed_sha256"].notna().any() else None
    cas = classification_accuracy_score(reference, images, labels, seeds)
    return {"cas": round(cas["cas"], 4), "gap": round(gap["gap"], 4), "score": round(cas["cas"] - gap["gap"], 4),
            "cas_per_class": cas["per_class"], "gap_per_class": {k: round(v["gap"], 4) for k, v in gap["per_class"].items()},
            "reference_cv_accuracy": reference_out.summary["cv_accuracy"]}


def row_paired(stages: dict[str, Any], domain: str, seed: int, results: pd.DataFrame | None = None,
               config: DomainConfig | None = None) -> list[str]:
    """The report's paired tests on the test images (Holm-corrected), as the report says them."""
    from pipeline.config import ReportConfig
    from reports.sections.answer import answer_section

    results = read_table(stages["classifiers"]["results"]) if results is None else results
    return answer_section(results, stages, domain, ReportConfig(), seed, config).get("words", [])


def arm_table(results: pd.DataFrame, evaluation: str = "test") -> dict[str, dict[str, float]]:
    """Per arm: fold-ensemble accuracy / macro-F1 and fold mean +- std on ``test`` or ``dev`` images."""
    accuracy, f1 = ("test_accuracy", "f1_macro") if evaluation == "test" else ("dev_accuracy", "dev_f1_macro")
    if accuracy not in results:
        return {}
    folds = results[results["fold"].astype(str) != "ensemble"]
    ensemble = results[results["fold"].astype(str) == "ensemble"].set_index("arm")
    out = {}
    for arm, group in folds.groupby("arm"):
        out[str(arm)] = {"accuracy": float(ensemble.loc[arm, accuracy]),
                         "f1_macro": float(ensemble.loc[arm, f1]),
                         "accuracy_mean": float(group[accuracy].mean()),
                         "accuracy_std": float(group[accuracy].std(ddof=1)) if len(group) > 1 else 0.0,
                         "f1_mean": float(group[f1].mean()),
                         "steps_mean": float(pd.to_numeric(group.get("steps_run", group.get("epochs_run")),
                                                           errors="coerce").mean())}
    return out


def computed_minutes(record: Any) -> float:
    """Compute time of this row's stages, counting a reused stage at what it cost when it was computed."""
    runs = [json.loads(p.read_text()).get("stages", {}) for p in sorted(record.run_dir.parent.glob("*/run.json"))]
    total = 0.0
    for name, info in record.stages.items():
        if "key" not in info:  # a stage with no cache key (the report) is written afresh every run
            total += float(info.get("seconds") or 0.0)
            continue
        seconds = float(info["seconds"])
        for stages in runs:  # the last run that computed this key (not from cache) says what it cost
            stage = stages.get(name)
            if stage and stage.get("key") == info["key"] and not stage.get("cached"):
                seconds = float(stage["seconds"])
        total += seconds
    return round(total / 60, 1)


def run_row(domain: str, index: int, data: str, runs_root: str, until: str, progress: bool,
            dev_fraction: float = DEV_FRACTION, seed: int | None = None) -> dict[str, Any] | None:
    config = row_config(domain, index, runs_root, dev_fraction, seed)
    started = time.perf_counter()
    record = run_domain(config, data, progress=progress, until=until)
    if until != "classifiers":
        print(f"row {index + 1} ({ROWS[index][0]}): stages up to {until} done in {time.perf_counter() - started:.0f} s")
        return None
    results = read_table(record.stages["classifiers"]["results"])
    synthesis = record.stages["synthesis"]["summary"]
    paired = row_paired(record.stages, domain, config.seed, results, config)
    dev, test = arm_table(results, "dev"), arm_table(results, "test")
    return {"row": index + 1, "name": ROWS[index][0], "delta": ROWS[index][1], "dev": dev, "test": test,
            "arms": test, "seed": config.seed, "dev_fraction": dev_fraction,
            "n_test": int(results["n_test"].max()),
            "n_dev": int(results["n_dev"].max()) if "n_dev" in results else 0, "paired": paired,
            "signal": row_signal(config, record), "selection": synthesis.get("selection"),
            "synthesis": {k: synthesis.get(k) for k in ("x0_clip", "timestep_spacing", "guidance_scale", "synthesis_mode",
                                                        "strength", "nn_distance_median", "seed_distance_median",
                                                        "generator", "generator_path")},
            "generator": {k: record.stages["generator"]["summary"].get(k) for k in (
                "steps", "continued_from", "ema_decay_reached", "mean_loss_last_50", "train_seconds")},
            "compute_minutes": computed_minutes(record), "run_dir": str(record.run_dir),
            "classifier_settings": record.stages["classifiers"]["summary"].get("settings"),
            "notes": record.stages["classifiers"]["summary"].get("notes", []), "device": record.meta.get("device")}


def write_grid(domain: str, row: dict[str, Any], per_row: int = 8) -> Path:
    """Real (the 20% sample) vs synthetic images per class of one finished row, same gray scale, 64 px."""
    return run_grid(row["run_dir"], RESULTS_DIR / f"{domain}-row{row['row']}-grid.png",
                    f"{domain} row {row['row']}: {row['name']} (real 20% sample vs synthetic)", per_row)


def run_grid(run_dir: str | Path, target: Path, title: str, per_row: int = 8) -> Path:
    """A finished run's real 20% sample beside its synthetic set, per class: the first ``per_row`` real images
    by content hash and the first ``per_row`` synthetic images in manifest order (the same indices in every run
    of one series, so two runs' grids compare picture for picture)."""
    from reports.grids import class_grid

    record = read_run_record(run_dir)["stages"]
    split = read_table(record["split"]["split"])
    train = split[split["split"] == "train"].sort_values("sha256")
    synthetic = read_table(record["synthesis"]["manifest"])
    rows: dict[str, list[str]] = {}
    for label in sorted(train["label"].unique()):
        rows[f"{label} / real"] = train[train["label"] == label]["path"].head(per_row).tolist()
        rows[f"{label} / synth"] = synthetic[synthetic["label"] == label]["path"].head(per_row).tolist()
    return class_grid(rows, target, mode=str(synthetic["mode"].iloc[0]), tile=64, source_size=64, title=title)


_ARCH_NAME = re.compile(r" \([\w.+-]+\)")  # "(resnet18)" in the report's sentences: one architecture here
ARMS_ORDER = ("synthetic", "real", "real+aug", "real+synthetic", "synthetic->real")

# The shipped decisions that were once promoted on held-out results (issue 18), re-made on the development
# images only: (what was decided, the row without it, the row with it, the arms it is judged on).
DECISIONS: list[tuple[str, int, int, tuple[str, ...]]] = [
    ("v-prediction + Min-SNR-5 + EMA power 1 (every profile's generator default)", 3, 4,
     ("synthetic", "real+synthetic")),
    ("selected guidance & checkpoint (synthesis.select)", 4, 5, ("synthetic", "real+synthetic")),
    ("real-seeded synthesis (synthesis.mode; not a shipped default)", 5, 6, ("synthetic", "real+synthetic")),
    ("the cpu-medium budget against the 500-step rows", 6, 9, ("synthetic", "real+synthetic")),
    # added once covid-ct's row 9 showed its 400-step fits with select_on val_loss keeping early steps (its real
    # arm 0.810 against 0.868 at 150 steps, development images): the budget as shipped is row 10, so it is
    # judged as shipped too; the comparison joins the Holm family (the correction grows, never shrinks)
    ("the cpu-medium budget as shipped (with select_on: val_accuracy) against the 500-step rows", 6, 10,
     ("synthetic", "real+synthetic")),
    ("select_on: val_accuracy (cpu-medium) against val_loss", 9, 10, ("synthetic", "real", "real+synthetic")),
]


def set_predictions(run_dir: str, set_name: str) -> dict[str, Any] | None:
    """Per arm, the fold-ensemble predictions of the architecture chosen on validation on the ``dev`` or
    ``test`` images, with their labels and clusters (from the files the row's run left; the report's readers)."""
    from reports.run_files import chosen_ensembles, ensemble_predictions, held_out_labels, results_table, scores_dir_of

    stages = read_run_record(run_dir)["stages"]
    results = results_table(stages)
    held_out = held_out_labels(stages, results, set_name) if results is not None else None
    if held_out is None:
        return None
    scores = scores_dir_of(stages, set_name)
    preds = {str(row.arm): ensemble_predictions(scores, row.fit_key) for row in chosen_ensembles(results).itertuples()}
    return {"labels": held_out[0], "clusters": held_out[1], "preds": {k: v for k, v in preds.items() if v is not None}}


def decisions(payload: dict[str, Any], resamples: int = 2000) -> list[dict[str, Any]]:
    """Each decision on the development images: the dev accuracy difference (with - without) per arm, a
    paired test (exact or clustered McNemar, bootstrap CI), Holm-corrected across every comparison made."""
    from reports.paired import compare

    raw, meta = {}, {}
    for name, before, after, arms in DECISIONS:
        rows = payload["rows"].get(str(before)), payload["rows"].get(str(after))
        if not all(r and "dev" in r for r in rows):
            continue
        sets = [set_predictions(r["run_dir"], "dev") for r in rows]
        if not all(sets):
            continue
        if not np.array_equal(sets[0]["labels"], sets[1]["labels"]):
            raise ValueError(f"rows {before} and {after} were scored on different development images; a paired test "
                             "needs the same images (same domain, split seed and dev_fraction)")
        for arm in arms:
            if arm in sets[0]["preds"] and arm in sets[1]["preds"]:
                label = f"{name} | {arm}"
                raw[label] = compare(sets[0]["labels"], sets[0]["preds"][arm], sets[1]["preds"][arm], resamples,
                                     int(rows[1].get("seed") or 0), clusters=sets[0]["clusters"])
                meta[label] = {"decision": name, "arm": arm, "rows": [before, after]}
    return holm_family(raw, meta, lambda m: f"row {m['rows'][1]} vs row {m['rows'][0]}, {m['arm']}")


def holm_family(raw: dict[str, Any], meta: dict[str, dict[str, Any]], title: Callable[[dict[str, Any]], str]
                ) -> list[dict[str, Any]]:
    """Paired comparisons Holm-corrected as one family: each with its metadata, its numbers and its sentence."""
    from reports.paired import holm

    corrected = holm(raw)
    return [{**meta[label], **corrected[label].to_dict(), "words": corrected[label].words(title(meta[label]))}
            for label in corrected]


def quotes_test(row: dict[str, Any]) -> bool:
    """Whether the table may quote a row's test-image numbers: every held-out-selected row (they predate the
    development split) and, of the development-split rows, only the final configuration's."""
    return "dev" not in row or row["row"] == len(ROWS)


def markdown(domain: str, payload: dict[str, Any]) -> str:
    rows = sorted(payload["rows"].values(), key=lambda r: (r["row"], r.get("seed") or 0))
    head = "| # | row | " + " | ".join(f"{a} acc (F1)" for a in ARMS_ORDER) + " | signal: CAS / gap | compute min |"
    lines = [head, "|" + "---|" * (len(ARMS_ORDER) + 4)]
    for r in rows:
        cells = []
        for arm in ARMS_ORDER:
            if "dev" in r:  # development-split rows: decide on dev, quote test only for the final row
                d, t = r["dev"].get(arm), r["test"].get(arm)
                test = f" / test {t['accuracy']:.3f}" if t and quotes_test(r) else ""
                cells.append(f"dev {d['accuracy']:.3f} ({d['f1_macro']:.3f}){test}" if d else "-")
                continue
            a = r["arms"].get(arm)
            cells.append(f"{a['accuracy']:.3f} ({a['f1_macro']:.3f}), folds {a['accuracy_mean']:.3f}+-{a['accuracy_std']:.3f}"
                         if a else "-")
        s = r["signal"]
        name = (f"{r['name']} (dev split, seed {r.get('seed')})" if "dev" in r
                else f"{r['name']} (held-out-selected, before the dev split)")
        lines.append(f"| {r['row']} | {name} | " + " | ".join(cells) +
                     f" | {s['cas']:.2f} / {s['gap']:.3f} | {r['compute_minutes']:.1f} |")
    selections = []
    for r in rows:
        if r.get("selection"):
            sel = r["selection"]
            cands = "; ".join(f"step {c['checkpoint_step']} g {c['guidance_scale']}"
                              + (f" s {c['strength']}" if c.get("strength") is not None else "")
                              + f": {c['score']:.3f} (CAS {c['cas']:.2f}, gap {c['gap']:.3f})" for c in sel["candidates"])
            selections.append(f"- row {r['row']}: chose checkpoint step {sel['checkpoint_step']}, guidance "
                              f"{sel['guidance_scale']}" + (f", strength {sel['strength']}" if sel.get("strength") else "")
                              + f" (reference CV accuracy {sel['reference_cv_accuracy']:.3f}). Candidates: {cands}")
    decision_lines = "\n".join(f"- {d['decision']}: {d['words']}" for d in payload.get("decisions", []))
    paired_lines = "\n".join(f"- row {r['row']}{' (test images: the final configuration)' if 'dev' in r else ''}: "
                             + "; ".join(_ARCH_NAME.sub("", w) for w in r["paired"])
                             for r in rows if r.get("paired") and quotes_test(r))
    return f"""# Ablation: {domain}

Command(s): {'; '.join(f'`{c}`' for c in payload['commands'])}

Rows marked "held-out-selected" scored the held-out real 80% ({payload.get('n_held_out', payload.get('n_test', '?'))} images) and were
promoted on it, one seed each: exploration, not unbiased estimates (issue 18). Rows marked "dev split"
hold out a development half of that 80% ({payload.get('n_dev', '?')} images; test: the other
{payload.get('n_test', '?')}): "dev" (where decisions are made) and "test" (never used for a decision; shown
only for row {len(ROWS)}, the final configuration). Each dev-split row names its seed: one seed per row unless
a row is listed again as "<row>-seed<S>". Ensemble accuracy of the fold models (macro-F1 in brackets), fold mean +- std
beside it for the older rows. Rows are cumulative. Signal: the selection signal of the row's
synthetic set against the real 20% sample only (CAS = mean per-class agreement of the reference
classifier; gap = mean |synthetic - real| of per-class mean / std / background, pixels in [0, 1]).

{chr(10).join(lines)}

Code: {payload.get('code', 'this checkout')}

## Decisions, made on the development images only

Each shipped decision that was once promoted on held-out results, re-made on the development half
({payload.get('n_dev', '?')} images): the row with the change against the row without it, per arm, paired
on the same development images (exact McNemar, or clustered McNemar when patients or near-duplicate
groups exist; 95% paired-bootstrap CI), Holm-corrected across every comparison listed. Test images are
not read here.

{decision_lines or '- no decision has both of its rows on the development split yet'}

## Sample grids (real 20% sample vs synthetic, one gray scale, 64 px)

{chr(10).join(f'![row {r["row"]}]({domain}-row{r["row"]}-grid.png)' for r in rows
              if (RESULTS_DIR / f'{domain}-row{r["row"]}-grid.png').is_file()) or '- none written yet (--grids)'}

## Paired tests vs real-only (held-out-selected rows on the held-out images; of the development-split rows only the final one, on the test images; exact or clustered McNemar, 95% paired-bootstrap CI)

{paired_lines or '- none recorded yet (--paired)'}

## Selection (every candidate's score)

{chr(10).join(selections) or '- no row used selection yet'}

## Shrinks (CPU budget; the study's protocol is the gpu profile)

{payload['shrinks']}

## Note

{payload.get('note', '')}
"""


SHRINKS = """- one architecture (resnet18, from scratch: no pretrained weights offline), 3 folds, 64 px everywhere
  (generator and classifiers), the cpu profile's 4.3 M-parameter UNet, batch 16
- generator: 500 optimizer steps (rows 1-6; ~6 epochs of brain-mri's 20% sample), row 7 continues the
  row-4 generator to 1000 steps (a warm restart of the cosine schedule), row 9 continues it to 2000 (the
  cpu-medium budget, EMA decay 0.99 instead of its 0.995); the study trains ~60k steps at 128 px
- synthesis: 50 images per class (rows 1-7; row 8 on: 200, the cpu-medium budget; the study: 1500-1700),
  SDE-DPM-Solver++ 20 steps
- classifiers, rows 1-2: today's epochs budget (8 epochs, patience 4, 90 s safety net, validation on the arm's
  own fold); rows 3-8: 150 optimizer steps per fit for every arm (batch 32), validation every 25 steps on the
  real fold, early stopping only after 75 steps; row 9: the cpu profile's 400 steps, early stopping after 200
  (patience 100), so its real arms are new fits
- selection, rows 5-8: 4 images per class per candidate, guidance 1 / 1.5 / 2 / 3, the 2 newest checkpoints,
  the reference classifier 150 steps per fold (3 folds); row 9: the shipped 8 images, guidance
  1 / 1.25 / 1.5 / 2 / 3, reference 300 steps per fold
- the synthetic->real arm (pretrain on synthetic, fine-tune on real, same total steps) only in rows 3, 7, 8, 9;
  row 10 (the shipped cpu-medium budget: selection on validation accuracy) fits synthetic, real and
  real+synthetic only
- rows 1-2 ran on the classifier code before issue 8's classifier changes; rows 3-7 on efficacy-clf's
  step budgets / real-fold validation / MONAI real+aug / synthetic->real code"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--runs-root", default="runs/ablation")
    parser.add_argument("--rows", default=None, help="comma-separated row numbers (default: all)")
    parser.add_argument("--until", default="classifiers", choices=("generator", "synthesis", "classifiers"))
    parser.add_argument("--redo", action="store_true", help="recompute rows already in the results JSON")
    parser.add_argument("--note", default=None, help="text for the Note section (kept until replaced)")
    parser.add_argument("--grids", action="store_true", help="only write the sample grids of finished rows")
    parser.add_argument("--paired", action="store_true",
                        help="only (re)compute the paired tests of finished rows from their stored predictions")
    parser.add_argument("--decisions", action="store_true",
                        help="only (re)compute the decisions on the development images from finished rows")
    parser.add_argument("--dev-fraction", type=float, default=DEV_FRACTION,
                        help="share of the held-out side used as the development set (decisions read only it)")
    parser.add_argument("--seed", type=int, default=None, help="run the rows on this seed (stored as <row>-seed<S>)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    out_json = RESULTS_DIR / f"{args.domain}.json"
    payload = json.loads(out_json.read_text()) if out_json.is_file() else {"domain": args.domain, "rows": {},
                                                                            "commands": []}
    payload["shrinks"] = SHRINKS
    if args.note:
        payload["note"] = args.note
    wanted = [int(r) for r in args.rows.split(",")] if args.rows else list(range(1, len(ROWS) + 1))
    if args.grids:
        for number in wanted:
            row = payload["rows"].get(str(number))
            if row is None:
                continue
            if not (Path(row["run_dir"]) / "run.json").is_file():
                print(f"row {number}: its run ({row['run_dir']}) is gone; the grid already written stays")
                continue
            print(f"wrote {write_grid(args.domain, row)}")
        atomic_write_text(RESULTS_DIR / f"{args.domain}.md", markdown(args.domain, payload))  # it lists the grids
        return 0
    if args.decisions:
        payload["decisions"] = decisions(payload)
        atomic_write_json(out_json, payload)
        atomic_write_text(RESULTS_DIR / f"{args.domain}.md", markdown(args.domain, payload))
        print("\n".join(d["decision"] + ": " + d["words"] for d in payload["decisions"]))
        return 0
    if args.paired:
        for number in wanted:
            if str(number) in payload["rows"]:
                row = payload["rows"][str(number)]
                run = read_run_record(row["run_dir"])
                row["paired"] = row_paired(run["stages"], args.domain, int(run["meta"]["seed"]),
                                           config=row_config(args.domain, number - 1, args.runs_root))
        atomic_write_json(out_json, payload)
        atomic_write_text(RESULTS_DIR / f"{args.domain}.md", markdown(args.domain, payload))
        return 0
    if not Path(args.data).exists():
        print(f"ablation: skipped: dataset not found at {args.data!r}")
        return 0
    for number in wanted:
        name = str(number) if args.seed is None else f"{number}-seed{args.seed}"
        if name in payload["rows"] and not args.redo and args.until == "classifiers":
            print(f"row {name}: already in {out_json} (use --redo to recompute)")
            continue
        row = run_row(args.domain, number - 1, args.data, args.runs_root, args.until, not args.quiet,
                      args.dev_fraction, args.seed)
        if row is None:
            continue
        row["command"] = command
        payload["rows"][name] = row
        payload["n_test"] = row["n_test"]  # the held-out real 80%: the same for every row of a domain
        payload["n_dev"] = row.get("n_dev", 0)
        payload["n_held_out"] = row["n_test"] + row.get("n_dev", 0)
        payload["decisions"] = decisions(payload)
        if command not in payload["commands"]:
            payload["commands"].append(command)
        atomic_write_json(out_json, payload)
        atomic_write_text(RESULTS_DIR / f"{args.domain}.md", markdown(args.domain, payload))
        print(markdown(args.domain, payload))
    if payload["rows"]:
        atomic_write_text(RESULTS_DIR / f"{args.domain}.md", markdown(args.domain, payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
