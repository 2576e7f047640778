"""The ``synth-augment`` command line.

    synth-augment demo                       make the phantom dataset and run the whole pipeline on it
    synth-augment validate --domain D        ingest + integrity check; prints the quarantine summary
    synth-augment split --domain D           the persisted 20/80 split, per-class counts
    synth-augment classifiers --domain D     the CNN panel: every arm, k-fold CV, held-out evaluation
    synth-augment run --domain D             every stage, end to end
    synth-augment generator train|sample|grid --domain D   the diffusion generator and the synthetic set

User errors (bad config, unusable data) print one clear message and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pipeline.config import PROFILES, DomainConfig, available_domains, deep_merge, load_domain_config, parse_override
from pipeline.errors import SynthAugmentError
from pipeline.run import ALL_STAGES

DEMO_DATA_DIRNAME = "demo-data"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synth-augment", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--profile", choices=PROFILES, default="cpu", help="machine profile (default: cpu)")
    common.add_argument("--runs-root", default=None, help="run store root (default: config runs_root, ./runs)")
    common.add_argument("--seed", type=int, default=None, help="override the config's seed")
    common.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set classifiers.folds=3 (repeatable)")
    common.add_argument("--quiet", action="store_true", help="no progress bars")

    domain_args = argparse.ArgumentParser(add_help=False, parents=[common])
    domain_args.add_argument("--domain", required=True,
                             help=f"domain name ({', '.join(available_domains())}) or a YAML config path")
    domain_args.add_argument("--data", default=None, help="dataset: ImageFolder root or CSV/parquet manifest "
                                                          "(default: the config's data.path)")

    demo = sub.add_parser("demo", parents=[common], help="make the phantom demo dataset and run the pipeline on it",
                          description="Write the built-in phantom dataset (no download) and run every stage on it.")
    demo.add_argument("--mode", choices=("L", "RGB"), default="L", help="grayscale (L) or the RGB variant")
    demo.add_argument("--per-class", type=int, default=200, help="phantom images per class (default: 200)")
    demo.add_argument("--size", type=int, default=64, help="phantom image side in pixels (default: 64)")
    demo.add_argument("--until", choices=ALL_STAGES, default=ALL_STAGES[-1],
                      help="stop after this stage (default: run everything)")

    data_cmd = sub.add_parser("demo-data", help="only write the phantom dataset (ImageFolder layout)",
                              description="Write the phantom dataset to OUT (deterministic from --seed).")
    data_cmd.add_argument("out", help="output folder")
    data_cmd.add_argument("--mode", choices=("L", "RGB"), default="L")
    data_cmd.add_argument("--per-class", type=int, default=200)
    data_cmd.add_argument("--size", type=int, default=64)
    data_cmd.add_argument("--seed", type=int, default=0)

    for name, text in (("ingest", "discover and validate a dataset; print the quarantine summary"),
                       ("validate", "same as ingest: discover, validate, print the quarantine summary")):
        sub.add_parser(name, parents=[domain_args], help=text, description=text[0].upper() + text[1:] + ".")
    sub.add_parser("split", parents=[domain_args], help="ingest, validate and make/reuse the 20/80 split",
                   description="Ingest, validate and make (or reuse) the persisted, verified 20/80 split.")
    run = sub.add_parser("run", parents=[domain_args], help="run every stage for one domain",
                         description="Run every stage of the pipeline for one domain, end to end.")
    run.add_argument("--until", choices=ALL_STAGES, default=ALL_STAGES[-1],
                     help="stop after this stage (default: run everything)")
    from classifiers.cli import register as register_classifiers
    from pipeline.generator.cli import add_generator_parser

    add_generator_parser(sub, domain_args)
    register_classifiers(sub, domain_args)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except SynthAugmentError as exc:
        print(f"synth-augment: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("synth-augment: interrupted; completed stages are kept and the next run resumes", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    from pipeline.demo_data import PhantomSpec, make_demo_dataset

    if args.command == "demo-data":
        out = make_demo_dataset(args.out, PhantomSpec(args.per_class, args.size, args.mode, args.seed))
        print(f"phantom dataset written to {out}")
        return 0
    if args.command == "demo":
        domain = "demo" if args.mode == "L" else "demo-rgb"
        config = _config(args, domain)
        data_dir = Path(config.runs_root) / DEMO_DATA_DIRNAME / f"{args.mode}-{args.size}px-{args.per_class}"
        make_demo_dataset(data_dir, PhantomSpec(args.per_class, args.size, args.mode, config.seed),
                          progress=not args.quiet)
        return _run(config, str(data_dir), args.quiet, args.until)

    config = _config(args, args.domain)
    if args.command in ("ingest", "validate"):
        from pipeline.stages import ingest_stage

        ingest = ingest_stage(config, args.data, progress=not args.quiet)
        _print_summary(ingest.summary, ingest.quarantine_path)
        return 0
    if args.command == "split":
        from pipeline.stages import ingest_stage, split_stage

        ingest = ingest_stage(config, args.data, progress=not args.quiet)
        _print_summary(ingest.summary, ingest.quarantine_path)
        split = split_stage(config, ingest.manifest_path)
        _print_counts(split.summary, split.split_path)
        return 0
    if args.command == "classifiers":
        from classifiers.cli import run as run_classifiers

        return run_classifiers(config, args)
    if args.command == "run":
        return _run(config, args.data, args.quiet, args.until)
    if args.command == "generator":
        from pipeline.generator.cli import run_generator_command

        return run_generator_command(args, config)
    raise AssertionError(f"unhandled command {args.command}")


def _config(args: argparse.Namespace, domain: str) -> DomainConfig:
    overrides: dict[str, Any] = {}
    for text in args.overrides:
        overrides = deep_merge(overrides, parse_override(text))
    if args.runs_root is not None:
        overrides["runs_root"] = args.runs_root
    if args.seed is not None:
        overrides["seed"] = args.seed
    return load_domain_config(domain, args.profile, overrides)


def _run(config: DomainConfig, data: str | None, quiet: bool, until: str) -> int:
    from pipeline.run import run_domain

    record = run_domain(config, data, progress=not quiet, until=until)
    for name, info in record.stages.items():
        state = "reused" if info.get("cached") else "done"
        print(f"[{name}] {state} in {info['seconds']:.1f}s  key={info.get('key', '-')}")
    stages = record.stages
    _print_summary(stages["ingest"]["summary"], stages["ingest"]["quarantine"])
    _print_counts(stages["split"]["summary"], stages["split"]["split"])
    if "generator" in stages:
        print(f"generator checkpoint: {stages['generator']['checkpoint']}")
    if "synthesis" in stages:
        print(f"synthetic set manifest: {Path(stages['synthesis']['manifest']).with_suffix('.csv')}")
    if "classifiers" in stages:
        _print_classifiers(stages["classifiers"])
    print(f"run record and resolved config: {record.run_dir}")
    return 0


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
    print(f"split {summary['split_hash']} (seed {summary['seed']}, train fraction {summary['train_fraction']}): "
          f"{summary['train']} train / {summary['test']} held out")
    for label, sides in summary["per_class"].items():
        print(f"  {label:>16}: {sides['train']:>6} train  {sides['test']:>6} held out")
    print(f"split table: {Path(split_path).with_suffix('.csv')}")


if __name__ == "__main__":
    sys.exit(main())
