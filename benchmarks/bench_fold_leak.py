"""How much does a generator that trained on validation fold k flatter the synthetic arm's validation?

    python -m benchmarks.bench_fold_leak --domain covid-ct --data ../shared/data/covid-ct

The synthetic arm trains on generated images and validates (early stopping, model selection, the
architecture choice) on fold k of the real 20% sample. In noise mode the generator trained on the
whole sample, fold k included, so its images may carry fold k's content and the validation score may
read high. This measures it on one domain and one fold: two generators on the same split, one on the
whole 20% sample (as the pipeline does) and one without fold k's images; each makes a synthetic set;
one synthetic-arm fit per set validates on fold k. The flattery is how much more the validation score
gains from fold k being in the generator's data than the development score (real images neither
generator saw) does:

    flattery = (val_with - val_without) - (dev_with - dev_without)

Development split: half of the held-out side (``split.dev_fraction`` 0.5); test images are not read.
Writes benchmarks/results/fold-leak.{json,md}. Shrunk for a 2-core CPU (``--generator-steps``,
``--per-class``, ``--fit-steps``); the numbers say how big the effect is at that budget, not at the study's.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.folds import canonical_order, fold_indices, groups_of
from classifiers.data import real_sample_manifest
from classifiers.stage import ENSEMBLE, classifiers_stage
from pipeline.config import DomainConfig, load_domain_config
from pipeline.generator.stage import synthesis_stage, train_generator_stage
from pipeline.split import DEV, TRAIN
from pipeline.stages import ingest_stage, load_split, split_stage
from pipeline.store import atomic_write_json, atomic_write_table, atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"


def settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"runs_root": args.runs_root,
            "split": {"cv_folds": 3, "dev_fraction": 0.5},
            "generator": {"train_steps": args.generator_steps, "checkpoint_every": max(50, args.generator_steps // 4)},
            "synthesis": {"per_class": args.per_class, "mode": "noise", "select": False, "steps": 20},
            "classifiers": {"architectures": ["resnet18"], "arms": ["synthetic"], "image_size": 64,
                            "pretrained": False, "max_steps": args.fit_steps, "min_steps": args.fit_steps // 2,
                            "patience_steps": max(25, args.fit_steps // 4), "eval_every_steps": 25}}


def split_without_fold(config: DomainConfig, split_path: Path, fold: int, folder: Path) -> Path:
    """A copy of the split whose fold-k validation images are moved out of the training side (to ``dev``
    here, only so that the generator does not see them; the classifiers keep reading the original split)."""
    split = load_split(split_path)
    real = canonical_order(real_sample_manifest(split))
    _, val = fold_indices(real["label"].to_numpy(), groups_of(real), config.split.cv_folds, config.seed)[fold]
    held = set(real["sha256"].iloc[val].astype(str))
    table = split.table.copy()
    moved = (table["split"] == TRAIN) & table["sha256"].astype(str).isin(held)
    table.loc[moved, "split"] = DEV
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_table(folder / "split.parquet", table)
    meta = json.loads(Path(split_path).with_name("split.json").read_text())
    atomic_write_json(folder / "split.json", {**meta, "split_hash": f"{meta['split_hash']}-without-fold{fold}"})
    return folder / "split.parquet"


def fold_scores(config: DomainConfig, split_path: Path, synthetic: Path, fold: int) -> dict[str, float]:
    table = pd.read_parquet(classifiers_stage(config, split_path, synthetic, progress=False).results_path)
    row = table[(table["arm"] == "synthetic") & (table["fold"] == str(fold))].iloc[0]
    ensemble = table[(table["arm"] == "synthetic") & (table["fold"] == ENSEMBLE)].iloc[0]
    return {"val_accuracy": float(row["val_accuracy"]), "val_loss": float(row["val_loss"]),
            "dev_accuracy": float(row["dev_accuracy"]), "dev_ensemble_accuracy": float(ensemble["dev_accuracy"]),
            "best_step": int(row["best_step"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", default="covid-ct")
    parser.add_argument("--data", default="../shared/data/covid-ct")
    parser.add_argument("--runs-root", default="/tmp/fold-leak-runs")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--generator-steps", type=int, default=500)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--fit-steps", type=int, default=300)
    args = parser.parse_args()
    if not Path(args.data).exists():
        print(f"bench_fold_leak: skipped: dataset not found at {args.data!r}")
        return
    started = time.perf_counter()
    config = load_domain_config(args.domain, "cpu", settings(args))
    split_path = split_stage(config, ingest_stage(config, args.data, progress=False).manifest_path).split_path
    without = split_without_fold(config, Path(split_path), args.fold, Path(args.runs_root) / "split-without-fold")
    result: dict[str, Any] = {"domain": args.domain, "fold": args.fold, "settings": settings(args)}
    for name, generator_split in (("with_fold", Path(split_path)), ("without_fold", without)):
        generator = train_generator_stage(config, generator_split, progress=False)
        synthetic = synthesis_stage(config, generator, progress=False).manifest_path
        result[name] = fold_scores(config, Path(split_path), Path(synthetic), args.fold)
        print(name, result[name], flush=True)
    w, wo = result["with_fold"], result["without_fold"]
    result["val_gain"] = round(w["val_accuracy"] - wo["val_accuracy"], 4)
    result["dev_gain"] = round(w["dev_accuracy"] - wo["dev_accuracy"], 4)
    result["flattery"] = round(result["val_gain"] - result["dev_gain"], 4)
    result["minutes"] = round((time.perf_counter() - started) / 60, 1)
    atomic_write_json(RESULTS / "fold-leak.json", result)
    atomic_write_text(RESULTS / "fold-leak.md", markdown(result))
    print(markdown(result))


def markdown(r: dict[str, Any]) -> str:
    w, wo = r["with_fold"], r["without_fold"]
    return f"""# Fold-k flattery of the synthetic arm's validation ({r['domain']}, fold {r['fold']})

`python -m benchmarks.bench_fold_leak --domain {r['domain']} --data ../shared/data/{r['domain']}`
(noise-mode synthesis, {r['settings']['generator']['train_steps']} generator steps,
{r['settings']['synthesis']['per_class']} synthetic images per class, resnet18 {r['settings']['classifiers']['max_steps']}
steps at 64 px, 3 folds; development split = half of the held-out side; {r['minutes']} min).

| generator trained on | fold-{r['fold']} validation accuracy | development accuracy (same fit) | selected step |
|---|---:|---:|---:|
| the whole 20% sample (as shipped) | {w['val_accuracy']:.3f} | {w['dev_accuracy']:.3f} | {w['best_step']} |
| the 20% sample without fold {r['fold']} | {wo['val_accuracy']:.3f} | {wo['dev_accuracy']:.3f} | {wo['best_step']} |

Validation gain from fold {r['fold']} being in the generator's data: {100 * r['val_gain']:+.1f} points; development
gain: {100 * r['dev_gain']:+.1f} points; flattery (the difference): {100 * r['flattery']:+.1f} points. One seed, one
fold: a size, not a significance test.
"""


if __name__ == "__main__":
    main()
