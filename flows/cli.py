"""The ``synth-augment`` command line.

    synth-augment demo                       make the phantom dataset and run the whole pipeline on it
    synth-augment validate --domain D        ingest + integrity check; prints the quarantine summary
    synth-augment split --domain D           the persisted 20/80 split, per-class counts
    synth-augment classifiers --domain D     the CNN panel: every arm, k-fold CV, held-out evaluation
    synth-augment run --domain D             every stage, end to end
    synth-augment generator train|sample|grid --domain D   the diffusion generator and the synthetic set
    synth-augment report --domain D          re-render the latest finished run's HTML report (no training)

Every command takes --profile, --budget and --set KEY=VALUE (see pipeline/config/layering.py for the layering).
User errors (bad config, unusable data) print one clear message and exit with status 2.

Adding a command: a ``register(sub, parents)`` function that calls ``sub.add_parser(...)`` (inheriting
``parents.domain`` or ``parents.common``) and ``set_defaults(func=handler)``, where ``handler(args)`` returns
the exit status (``pipeline.cli_args.config_from_args(args)`` resolves the config); then one entry in
``build_parser``. This is the front door (the top floor): it may import every floor below it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from classifiers.cli import register as register_classifiers
from flows.generator_cli import register as register_generator
from flows.progress import show_progress
from flows.run import ALL_STAGES
from pipeline.cli_args import Parents, build_parents, config_from_args, overrides_from_args
from pipeline.config import DomainConfig
from pipeline.errors import SynthAugmentError
from reports.cli import register as register_report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synth-augment", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parents = build_parents()
    # a new command: one more here
    for register in (register_core, register_generator, register_classifiers, register_report):
        register(sub, parents)
    return parser


def register_core(sub: Any, parents: Parents) -> None:
    """The pipeline's own commands: demo, demo-data, ingest, validate, split, run."""
    demo = sub.add_parser("demo", parents=[parents.common],
                          help="make the phantom demo dataset and run the pipeline on it",
                          description="Write the built-in phantom dataset (no download) and run every stage on it.")
    demo.add_argument("--mode", choices=("L", "RGB"), default="L", help="grayscale (L) or the RGB variant")
    demo.add_argument("--per-class", type=int, default=200, help="phantom images per class (default: 200)")
    demo.add_argument("--size", type=int, default=64, help="phantom image side in pixels (default: 64)")
    demo.add_argument("--until", choices=ALL_STAGES, default=ALL_STAGES[-1],
                      help="stop after this stage (default: run everything)")
    demo.set_defaults(func=_demo)

    data_cmd = sub.add_parser("demo-data", help="only write the phantom dataset (ImageFolder layout)",
                              description="Write the phantom dataset to OUT (deterministic from --seed).")
    data_cmd.add_argument("out", help="output folder")
    data_cmd.add_argument("--mode", choices=("L", "RGB"), default="L")
    data_cmd.add_argument("--per-class", type=int, default=200)
    data_cmd.add_argument("--size", type=int, default=64)
    data_cmd.add_argument("--seed", type=int, default=0)
    data_cmd.set_defaults(func=_demo_data)

    for name, text in (("ingest", "discover and validate a dataset; print the quarantine summary"),
                       ("validate", "same as ingest: discover, validate, print the quarantine summary")):
        cmd = sub.add_parser(name, parents=[parents.domain], help=text, description=text[0].upper() + text[1:] + ".")
        cmd.set_defaults(func=_ingest)
    split = sub.add_parser("split", parents=[parents.domain], help="ingest, validate and make/reuse the 20/80 split",
                           description="Ingest, validate and make (or reuse) the persisted, verified 20/80 split.")
    split.set_defaults(func=_split)
    run = sub.add_parser("run", parents=[parents.domain], help="run every stage for one domain",
                         description="Run every stage of the pipeline for one domain, end to end.")
    run.add_argument("--until", choices=ALL_STAGES, default=ALL_STAGES[-1],
                     help="stop after this stage (default: run everything)")
    run.set_defaults(func=lambda args: _run(config_from_args(args), args.data, args.quiet, args.until))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    show_progress()  # long loops' progress lines on stderr, once a minute (flows.progress); --quiet hides bars only
    try:
        return args.func(args)
    except SynthAugmentError as exc:
        print(f"synth-augment: error: {exc}", file=sys.stderr)
        return 2
    except PermissionError as exc:  # a read-only runs root or output folder: name it, no traceback
        where = exc.filename or "a file"
        print(f"synth-augment: error: {where}: {exc.strerror or 'permission denied'}; pass --runs-root (or --out) "
              f"to a writable folder", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("synth-augment: interrupted; completed stages are kept and the next run resumes", file=sys.stderr)
        return 130


def _demo_data(args: argparse.Namespace) -> int:
    from pipeline.demo_data import PhantomSpec, make_demo_dataset

    out = make_demo_dataset(args.out, PhantomSpec(args.per_class, args.size, args.mode, args.seed))
    print(f"phantom dataset written to {out}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    """The Prefect flow, in-process (a temporary local API: no server needed)."""
    from flows.synth_augment import synth_augment
    from pipeline.demo_data import PhantomSpec, demo_dataset

    domain = "demo" if args.mode == "L" else "demo-rgb"
    config = config_from_args(args, domain)
    data_dir = demo_dataset(config.runs_root, PhantomSpec(args.per_class, args.size, args.mode, config.seed),
                            progress=not args.quiet)
    result = synth_augment(domain=domain, data=str(data_dir), profile=args.profile, budget=args.budget,
                           overrides=overrides_from_args(args), until=args.until, progress=not args.quiet)
    _print_run(result["stages"], result["run_dir"])
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from pipeline.stages import ingest_stage

    ingest = ingest_stage(config_from_args(args), args.data, progress=not args.quiet)
    _print_summary(ingest.summary, ingest.quarantine_path)
    return 0


def _split(args: argparse.Namespace) -> int:
    from pipeline.stages import ingest_stage, split_stage

    config = config_from_args(args)
    ingest = ingest_stage(config, args.data, progress=not args.quiet)
    _print_summary(ingest.summary, ingest.quarantine_path)
    split = split_stage(config, ingest.manifest_path)
    _print_counts(split.summary, split.split_path)
    return 0


def _run(config: DomainConfig, data: str | None, quiet: bool, until: str) -> int:
    from flows.run import run_domain

    record = run_domain(config, data, progress=not quiet, until=until)
    _print_run(record.stages, record.run_dir)
    return 0


def _print_run(stages: dict[str, Any], run_dir: Any) -> None:
    for name, info in stages.items():
        state = "reused" if info.get("cached") else "done"
        print(f"[{name}] {state} in {info['seconds']:.1f}s  key={info.get('key', '-')}")
    _print_summary(stages["ingest"]["summary"], stages["ingest"]["quarantine"])
    _print_counts(stages["split"]["summary"], stages["split"]["split"])
    if "generator" in stages:
        print(f"generator pipeline (ClassConditionalPipeline.from_pretrained): {stages['generator']['pipeline']}")
    if "synthesis" in stages:
        print(f"synthetic set manifest: {Path(stages['synthesis']['manifest']).with_suffix('.csv')}")
    for line in stages.get("quality", {}).get("lines", []):
        print(f"quality: {line}")
    if "quality" in stages:
        print(f"quality report: {stages['quality']['report']}")
    if "classifiers" in stages:
        _print_classifiers(stages["classifiers"])
    if "explain" in stages:
        _print_explanations(stages["explain"])
    print(f"run record and resolved config: {run_dir}")
    if "report" in stages:
        print(f"report: {stages['report']['path']}")


def _print_explanations(info: dict[str, Any]) -> None:
    summary = info.get("summary") or {}
    if summary.get("not_run"):
        print(f"explanations: not run ({summary['not_run']})")
    else:
        print(f"explanations: {summary.get('explanations', 0)} LIME explanations in {info.get('directory')}")


def _print_classifiers(info: dict[str, Any]) -> None:
    summary = info["summary"]
    print("held-out real test accuracy (fold ensemble), per arm and architecture:")
    for name, accuracy in sorted(summary.get("ensemble_accuracy", {}).items()):
        print(f"  {name:>36}: {accuracy:.3f}")
    for note in summary.get("notes", []):
        print(f"note: {note}")
    print(f"results table: {Path(info['results']).with_suffix('.csv')}")


def _print_summary(summary: dict[str, Any], quarantine_path: Any) -> None:
    per_class = ", ".join(f"{k} {v}" for k, v in summary["per_class"].items())
    print(f"usable images: {summary['usable']} ({per_class})")
    reasons = summary.get("quarantine_reasons") or {}
    if reasons:
        listing = ", ".join(f"{k} {v}" for k, v in reasons.items())
        print(f"quarantined: {summary['quarantined']} ({listing}); details: {Path(quarantine_path).with_suffix('.csv')}")
    else:
        print("quarantined: 0")
    for note in summary.get("notes", [])[:10]:
        print(f"note: {note}")
    if len(summary.get("notes", [])) > 10:
        print(f"note: ... {len(summary['notes']) - 10} more notes in the ingest folder's notes.txt")


def _print_counts(summary: dict[str, Any], split_path: Any) -> None:
    dev = int(summary.get("dev", 0) or 0)
    print(f"split {summary['split_hash']} (seed {summary['seed']}, train fraction {summary['train_fraction']}): "
          f"{summary['train']} train / " + (f"{dev} development / " if dev else "") + f"{summary['test']} held out")
    for label, sides in summary["per_class"].items():
        development = f"  {sides.get('dev', 0):>6} development" if dev else ""
        print(f"  {label:>16}: {sides['train']:>6} train{development}  {sides['test']:>6} held out")
    print(f"split table: {Path(split_path).with_suffix('.csv')}")


if __name__ == "__main__":
    sys.exit(main())
