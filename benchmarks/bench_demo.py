"""The newcomer's first command: ``synth-augment demo`` end to end, its time per stage and its answer, per seed.

    python -m benchmarks.bench_demo                     # seeds 1 2 3, each on a fresh run store
    python -m benchmarks.bench_demo --seeds 7 --work /tmp/bd

Each seed is a fresh process on a fresh run store (the phantom data is written with that seed too), timed
from the command's start to its exit. The answer is read back from the finished run the way the report
renders it (``reports.html.build_context``): the tone (helps / hurts / unclear), the best arm overall and
the best synthetic arm's Holm-corrected comparison with real-only. Goal (issue 20): at most 5 minutes on a
developer machine and the same answer on every seed. Machine speed varies 2-4x between sessions, so the
fp32 matmul rate is recorded before and after the runs. Table + JSON: benchmarks/results/demo.{md,json}.

Choosing the demo's settings must not read the test images (issue 18): ``--dev-fraction 0.5`` runs the demo
with a development split and reads the answer on the development images (same statistics, same wording),
writing benchmarks/results/demo-dev.{md,json}. The shipped demo (no development split) is then run once
per seed to record its time and its answer on the test images.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "benchmarks" / "results"
GOAL_S = 300.0

from benchmarks.bench_quality import matmul_gflops  # noqa: E402 - the same machine-speed probe as the others


def run_demo(seed: int, root: Path, extra: list[str], set_name: str = "test", fresh: bool = True) -> dict[str, Any]:
    """One ``synth-augment demo`` in a fresh process; its wall time, stage times and answer on ``set_name``."""
    if fresh:
        shutil.rmtree(root, ignore_errors=True)
    (root / "prefect-home").mkdir(parents=True, exist_ok=True)  # Prefect reads its home before the demo makes root
    env = {**os.environ, "TQDM_DISABLE": "1", "PREFECT_HOME": str(root / "prefect-home"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    command = [sys.executable, "-m", "flows.cli", "demo", "--seed", str(seed), "--runs-root", str(root), "--quiet",
               *extra]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"seed {seed}: {shlex.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    from reports.html import build_context, latest_run_dir

    run_dir = latest_run_dir(root, "demo")
    if run_dir is None:
        raise SystemExit(f"seed {seed}: no finished run under {root}/demo/history")
    context = build_context(run_dir)
    answer = context["answer"] if set_name == "test" else development_answer(run_dir, seed)
    stages = {name: info.get("seconds") for name, info in context["stages"].items()}
    accuracies = {row["arm"]: float(row["accuracy_raw"]) for row in answer.get("rows", [])}
    best = max(accuracies, key=accuracies.get) if accuracies else None
    return {"seed": seed, "wall_s": round(wall, 1), "stages_s": stages, "tone": answer.get("tone"),
            "best_arm": best, "accuracy": accuracies, "headline": answer.get("headline"),
            "comparisons": answer.get("words", [])}


def development_answer(run_dir: Path, seed: int) -> dict[str, Any]:
    """The report's answer computed on the development images instead of the test images."""
    from pipeline.run_record import read_run_record
    from reports.run_files import results_table, run_config_of
    from reports.sections.answer import answer_section

    stages = read_run_record(run_dir)["stages"]
    config = run_config_of((run_dir / "config.yaml").read_text(encoding="utf-8"))
    if config is None:
        raise SystemExit(f"{run_dir}/config.yaml does not load with this checkout's config models")
    return answer_section(results_table(stages), stages, config.name, config.report, seed, config, set_name="dev")


def write(payload: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    runs = payload["runs"]
    stage_names = list(dict.fromkeys(name for run in runs for name in run["stages_s"]))
    dev = payload.get("set_name") == "dev"
    lines = ["# synth-augment demo: time and answer per seed" + (" (DEVELOPMENT split: for choosing settings)" if dev else ""), "",
             f"Machine: {payload['machine']}, fp32 matmul {payload['matmul_gflops_before']} GFLOP/s before and "
             f"{payload['matmul_gflops_after']} after (2 threads); command: `{payload['command']}`", "",
             "| seed | wall s | " + " | ".join(stage_names) + " | answer | best arm |",
             "|---|---:|" + "---:|" * len(stage_names) + "---|---|"]
    for run in runs:
        cells = [f"{run['stages_s'].get(name, 0) or 0:.0f}" for name in stage_names]
        lines.append(f"| {run['seed']} | {run['wall_s']:.0f} | " + " | ".join(cells)
                     + f" | {run['tone']} | {run['best_arm']} |")
    walls = sorted(run["wall_s"] for run in runs)
    same = len({(run["tone"], run["best_arm"]) for run in runs}) == 1
    lines += ["", f"Median wall time {walls[len(walls) // 2]:.0f} s (goal <= {GOAL_S:.0f} s); the same answer on "
              f"every seed: {'yes' if same else 'NO'}.", "", "Answers as the report words them:", ""]
    lines += [f"- seed {run['seed']}: {run['headline']}" for run in runs]
    if not payload.get("timed", True):
        lines += ["", "Not a timing: unchanged stages were reused from an earlier variant's run store (--keep-store)."]
    if dev:
        lines += ["", "The answers above read the development images (half of the held-out side); the test "
                  "images were scored by the runs but not read here."]
    stem = ("demo-dev" if dev else "demo") + (f"-{payload['label']}" if payload.get("label") else "")
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (RESULTS / f"{stem}.json").write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--work", default=None, help="folder for the run stores (default: a temporary one)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to the demo")
    parser.add_argument("--dev-fraction", type=float, default=0.0,
                        help="> 0: hold out a development split and read the answer on it (for choosing settings)")
    parser.add_argument("--label", default="", help="suffix of the result files (one per variant compared)")
    parser.add_argument("--keep-store", action="store_true",
                        help="reuse the run stores already in --work (unchanged stages are cached: for comparing "
                             "variants on the development split, not for timing)")
    args = parser.parse_args(argv)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-demo-"))
    extra = [f"--set={item}" for item in args.set]
    set_name = "dev" if args.dev_fraction > 0 else "test"
    if args.dev_fraction > 0:
        extra.append(f"--set=split.dev_fraction={args.dev_fraction}")
    before = matmul_gflops()
    runs = []
    for seed in args.seeds:
        runs.append(run_demo(seed, work / f"seed{seed}", extra, set_name, fresh=not args.keep_store))
        print(f"seed {seed}: {runs[-1]['wall_s']:.0f} s, {runs[-1]['tone']}, best {runs[-1]['best_arm']}", flush=True)
    payload = {"runs": runs, "set_name": set_name, "timed": not args.keep_store, "label": args.label,
               "matmul_gflops_before": before, "matmul_gflops_after": matmul_gflops(),
               "machine": f"{platform.machine()}, {os.cpu_count()} cores",
               "command": "python -m benchmarks.bench_demo " + shlex.join(argv if argv is not None else sys.argv[1:])}
    write(payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
