"""Orchestration overhead: the demo through the Prefect flow (in-process and through a server) vs plain.

    python -m benchmarks.bench_flow                          # every measurement (about 3 demo runs)
    python -m benchmarks.bench_flow --only plain --work W    # one at a time; results accumulate in the JSON
    python -m benchmarks.bench_flow --only inprocess cached --work W
    python -m benchmarks.bench_flow --only server --work W

Measurements, each a fresh process on a fresh run store holding the same phantom dataset:

* ``plain``: ``synth-augment run --domain demo --data <phantoms>`` (``run_domain``, no Prefect),
* ``inprocess``: ``synth-augment demo`` (the flow in-process, Prefect's temporary local API),
* ``cached``: ``synth-augment demo`` again on the ``inprocess`` run store (every stage reused),
* ``server``: ``prefect deployment run synth-augment/demo --watch`` against a Prefect server on
  loopback (SQLite) with a process worker; timed from the trigger to the completed state (the
  server's start is reported separately), then once more fully cached (``server_cached``).

Overhead = (flow - plain) / plain. Goal: <= 10%; cached run < 60 s. Table + JSON in
benchmarks/results/flow.{md,json}; machine speed varies between sessions, so the matmul rate is
recorded beside the times and only ratios within one session are comparable.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "flows"))
RESULTS = REPO / "benchmarks" / "results"
MEASUREMENTS = ("plain", "inprocess", "cached", "server")

from benchmarks.bench_quality import matmul_gflops  # noqa: E402 - the same machine-speed probe as the others

# The demo before issue 20 (one house), for the stage table: the plain run of benchmarks/results/flow.json at
# d3e6271 (716.6 s at 335.8 GFLOP/s) and the stage split issue 20 quotes for b64a618 (the reference classifier
# was trained inside the quality stage then; the synthesis, LIME and report stages were not itemised).
BEFORE: dict[str, Any] = {"plain_s": 716.6, "matmul_gflops": 335.8, "source": "flow.json at d3e6271; issue 20 (b64a618)",
                          "stages_s": {"generator": 160.0, "quality": 143.0, "classifiers": 361.0}}


def _env() -> dict[str, str]:
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "TQDM_DISABLE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return env


def _timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return round(seconds, 1)


def _fresh_root(work: Path, name: str, extra: list[str]) -> Path:
    """A run store with the demo's phantom set already written (not part of any timing)."""
    from pipeline.demo_data import PhantomSpec, demo_dataset

    root = work / name
    shutil.rmtree(root, ignore_errors=True)
    demo_dataset(root, PhantomSpec(), progress=False)
    return root


def measure(which: list[str], work: Path, extra: list[str]) -> dict[str, Any]:
    cli = [sys.executable, "-m", "flows.cli"]
    env = _env()
    out: dict[str, Any] = {}
    if "plain" in which:
        root = _fresh_root(work, "plain", extra)
        data = next((root / "demo-data").iterdir())
        out["plain_s"] = _timed([*cli, "run", "--domain", "demo", "--data", str(data), "--runs-root", str(root),
                                 "--quiet", *extra], env)
        out["plain_stages_s"] = stage_seconds(root)
    if "inprocess" in which or "cached" in which:
        root = work / "inprocess"
        if "inprocess" in which:
            root = _fresh_root(work, "inprocess", extra)
            env_home = {**env, "PREFECT_HOME": str(work / "prefect-home-inprocess")}
            out["inprocess_s"] = _timed([*cli, "demo", "--runs-root", str(root), "--quiet", *extra], env_home)
        if "cached" in which:
            env_home = {**env, "PREFECT_HOME": str(work / "prefect-home-inprocess")}
            out["cached_s"] = _timed([*cli, "demo", "--runs-root", str(root), "--quiet", *extra], env_home)
    if "server" in which:
        from flow_helpers import start_server

        root = _fresh_root(work, "server", extra)
        started = time.perf_counter()
        server = start_server(work / "prefect-home-server")
        out["server_start_s"] = round(time.perf_counter() - started, 1)
        try:
            started = time.perf_counter()
            server.deploy()
            out["deploy_s"] = round(time.perf_counter() - started, 1)
            overrides = _overrides_json(extra)
            params = ["--param", f"runs_root={root}", *(["--param", f"overrides={overrides}"] if overrides else [])]
            for key in ("server_s", "server_cached_s"):
                started = time.perf_counter()
                result = server.cli("deployment", "run", "synth-augment/demo", *params, "--watch",
                                    "--watch-timeout", "1800", timeout=1900)
                if "Completed" not in result.stdout:
                    raise SystemExit(f"server run did not complete:\n{result.stdout[-3000:]}")
                out[key] = round(time.perf_counter() - started, 1)
        finally:
            server.stop()
    return out


def stage_seconds(runs_root: Path, domain: str = "demo") -> dict[str, float]:
    """Seconds per stage from the newest run record under ``runs_root`` (what the run itself measured)."""
    from pipeline.run_record import read_run_record
    from reports.html import latest_run_dir

    run_dir = latest_run_dir(runs_root, domain)
    if run_dir is None:
        raise SystemExit(f"no finished {domain} run under {runs_root}")
    stages = read_run_record(run_dir)["stages"]
    return {name: round(float(info["seconds"]), 1) for name, info in stages.items() if info.get("seconds") is not None}


def stage_table(results: dict[str, Any]) -> list[str]:
    """The demo's stage times before issue 20 and now, raw and scaled by the fp32 matmul rate of each machine."""
    after = results.get("plain_stages_s")
    if not after:
        return []
    now_rate = results.get("matmul_gflops_plain") or results.get("matmul_gflops")
    scale = now_rate / BEFORE["matmul_gflops"] if now_rate else None
    lines = ["", "## The demo's stage times, before issue 20 and now (`synth-augment run`, plain)", "",
             f"Before: {BEFORE['source']}, at {BEFORE['matmul_gflops']} GFLOP/s. Now: this run, at {now_rate} "
             "GFLOP/s. The scaled column multiplies now's seconds by (now's rate / before's rate): what the run "
             "would take at before's matmul speed if time followed matmul speed (an estimate, not a measurement).",
             "", "| stage | before s | now s | now s, scaled to before's machine |", "|---|---:|---:|---:|"]
    names = list(dict.fromkeys([*after, *BEFORE["stages_s"]]))
    for name in names:
        before = BEFORE["stages_s"].get(name)
        now = after.get(name)
        scaled = f"{now * scale:.0f}" if now is not None and scale else "-"
        lines.append(f"| {name} | {before if before is not None else '-'} | {now if now is not None else '-'} | {scaled} |")
    total = results.get("plain_s")
    if total:
        scaled = f"{total * scale:.0f}" if scale else "-"
        lines.append(f"| whole run (wall) | {BEFORE['plain_s']} | {total} | {scaled} |")
    return lines


def _overrides_json(extra: list[str]) -> str | None:
    from pipeline.config import deep_merge, parse_override

    merged: dict[str, Any] = {}
    for item in extra:
        if item.startswith("--set="):
            merged = deep_merge(merged, parse_override(item[len("--set="):]))
    return json.dumps(merged) if merged else None


def write(results: dict[str, Any], name: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    plain = results.get("plain_s")
    rows = [("`synth-augment run` on the demo data (no Prefect)", results.get("plain_s"), ""),
            ("`synth-augment demo` (flow in-process, temporary local API)", results.get("inprocess_s"), "overhead"),
            ("`prefect deployment run synth-augment/demo` (server + process worker)", results.get("server_s"),
             "overhead"),
            ("`synth-augment demo` again, fully cached", results.get("cached_s"), "goal < 60 s"),
            ("deployment run again, fully cached", results.get("server_cached_s"), "goal < 60 s")]
    lines = [f"# Flow orchestration overhead ({name})", "",
             f"Machine: {results['machine']}, fp32 matmul {results.get('matmul_gflops')} GFLOP/s (2 threads); "
             f"command: `{results.get('command')}`", "",
             "| run | wall s | vs plain |", "|---|---:|---|"]
    for label, seconds, kind in rows:
        if seconds is None:
            continue
        if kind == "overhead" and plain:
            note = f"{100 * (seconds - plain) / plain:+.1f}% (goal <= +10%)"
        else:
            note = kind
        lines.append(f"| {label} | {seconds} | {note} |")
    for key, label in (("server_start_s", "server start (fresh SQLite)"), ("deploy_s", "pool + deploy --all + worker")):
        if key in results:
            lines.append(f"| {label} | {results[key]} | not in the run times |")
    lines += stage_table(results)
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=MEASUREMENTS, default=list(MEASUREMENTS))
    parser.add_argument("--work", default=None, help="scratch folder kept between --only calls (default: temp)")
    parser.add_argument("--name", default="flow", help="results file name under benchmarks/results/")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run (e.g. a smaller demo)")
    args = parser.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-flow-"))
    work.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{args.name}.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    results.update(measure(args.only, work, [f"--set={s}" for s in args.sets]))
    command = "python -m benchmarks.bench_flow " + " ".join(sys.argv[1:])
    results.setdefault("commands", {}).update({name: command for name in args.only})
    results.setdefault("matmul_gflops_per_command", {})[command] = matmul_gflops()
    results.update(machine=f"{platform.machine()}, {os.cpu_count()} cores",
                   matmul_gflops=results["matmul_gflops_per_command"][command], command=command)
    if "plain" in args.only:
        results["matmul_gflops_plain"] = results["matmul_gflops"]
    write(results, args.name)


if __name__ == "__main__":
    main()
