"""How long must the generator train before its images teach a classifier? (issue 21, item 7)

    python benchmarks/time_to_useful.py --domain brain-mri --data ../shared/data/brain-mri \
        --runs-root /tmp/ttu-runs --every 250 --steps 2000

Trains one generator from scratch (the domain's cpu profile, ``--set`` overrides) with a checkpoint every
``--every`` steps, all kept. For each checkpoint: its EMA weights are exported, ``--per-class`` images per
class are sampled with the profile's synthesis settings, and the synthetic-only arm is trained (the
profile's classifier protocol: k folds validated on the real sample) and scored on the DEVELOPMENT half of
the held-out side (``split.dev_fraction`` 0.5; the test half is never read here). The curve - generator
steps, generator CPU minutes, synthetic-only dev accuracy - says how long to train. Every stage is cached
by content, so an interrupted run continues where it stopped. Writes
benchmarks/results/time-to-useful-<domain>.{md,json}; the fp32 matmul rate is recorded with it.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from benchmarks.bench_quality import matmul_gflops  # noqa: E402
from classifiers.stage import ENSEMBLE, classifiers_stage  # noqa: E402
from pipeline.config import deep_merge, load_domain_config  # noqa: E402
from pipeline.config.layering import parse_override  # noqa: E402
from pipeline.generator.checkpoint import list_checkpoints  # noqa: E402
from pipeline.generator.sampling import load_pipeline  # noqa: E402
from pipeline.generator.selection import export_checkpoint_ema  # noqa: E402
from pipeline.generator.stage import real_sample, train_generator_stage  # noqa: E402
from pipeline.generator.synthesis import synthesize  # noqa: E402
from pipeline.stages import ingest_stage, split_stage  # noqa: E402
from pipeline.store import atomic_write_json, atomic_write_table, atomic_write_text  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def curve(args: argparse.Namespace) -> dict[str, Any]:
    sets: dict[str, Any] = {}
    for item in args.set:
        sets = deep_merge(sets, parse_override(item))
    overrides = deep_merge(sets, {
        "runs_root": args.runs_root, "split": {"dev_fraction": 0.5},
        "generator": {"train_steps": args.steps, "checkpoint_every": args.every,
                      "keep_checkpoints": args.steps // args.every + 1},
        "synthesis": {"per_class": args.per_class, "select": False},
        "classifiers": {"arms": ["synthetic"], "architectures": [args.architecture]}})
    config = load_domain_config(args.domain, "cpu", overrides)
    split = split_stage(config, ingest_stage(config, args.data, progress=False).manifest_path)
    generator = train_generator_stage(config, split.split_path, progress=not args.quiet)
    minutes_per_step = float(generator.summary["train_seconds"]) / 60 / int(generator.summary["steps"])
    real = real_sample(config, split.split_path)
    points = []
    for step, checkpoint in list_checkpoints(generator.directory / "checkpoints"):
        folder = Path(args.runs_root) / "time-to-useful" / config.name / generator.key / f"step-{step:08d}"
        if not (folder / "pipeline" / "model_index.json").is_file():
            export_checkpoint_ema(config, checkpoint, folder / "pipeline")
        manifest_path = folder / "manifest.parquet"
        if not manifest_path.is_file():
            pipe = load_pipeline(folder / "pipeline")
            manifest = synthesize(pipe, folder / "images", config.synthesis, config.seed, f"{generator.key}@{step}",
                                  progress=False, real=real)
            atomic_write_table(manifest_path, manifest, csv_copy=False)
        results = pd.read_parquet(classifiers_stage(config, split.split_path, manifest_path,
                                                    progress=False).results_path)
        ensemble = results[(results["arm"] == "synthetic") & (results["fold"].astype(str) == ENSEMBLE)].iloc[0]
        points.append({"step": step, "generator_minutes": round(step * minutes_per_step, 1),
                       "dev_accuracy": round(float(ensemble["dev_accuracy"]), 4),
                       "dev_f1_macro": round(float(ensemble["dev_f1_macro"]), 4)})
        print(f"step {step}: {points[-1]['generator_minutes']} generator min, synthetic-only dev accuracy "
              f"{points[-1]['dev_accuracy']:.3f}", flush=True)
    return {"domain": config.name, "points": points, "generator_key": generator.key,
            "settings": {"every": args.every, "steps": args.steps, "per_class": args.per_class,
                         "architecture": args.architecture, "set": args.set}}


def markdown(payload: dict[str, Any]) -> str:
    lines = [f"# Time to a useful generator: {payload['domain']}", "",
             f"Command: `{payload['command']}`", "",
             f"fp32 matmul {payload['matmul_gflops']} GFLOP/s (2 threads). Synthetic-only accuracy of the "
             f"{payload['settings']['architecture']} fold ensemble on the development half of the held-out side "
             "(the test half is not read); generator minutes are this machine's training time up to the step.", "",
             "| generator step | generator CPU min | synthetic-only dev accuracy | dev macro-F1 |", "|---:|---:|---:|---:|"]
    lines += [f"| {p['step']} | {p['generator_minutes']} | {p['dev_accuracy']:.3f} | {p['dev_f1_macro']:.3f} |"
              for p in payload["points"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--runs-root", required=True)
    parser.add_argument("--every", type=int, default=250, help="generator steps between points")
    parser.add_argument("--steps", type=int, default=2000, help="generator steps in all")
    parser.add_argument("--per-class", type=int, default=100, help="synthetic images per class per point")
    parser.add_argument("--architecture", default="resnet18")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.every < 1 or args.steps < args.every:
        parser.error("--every must be >= 1 and --steps >= --every")
    started = time.perf_counter()
    payload = {**curve(args), "matmul_gflops": round(matmul_gflops(), 1),
               "wall_minutes": round((time.perf_counter() - started) / 60, 1),
               "command": "python benchmarks/time_to_useful.py " + shlex.join(argv if argv is not None else sys.argv[1:])}
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS / f"time-to-useful-{payload['domain']}.json", payload)
    atomic_write_text(RESULTS / f"time-to-useful-{payload['domain']}.md", markdown(payload))
    print(markdown(payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
