"""``synth-augment report --domain D``: re-render a finished run's HTML report from its files only."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipeline.errors import DataError


def register(sub: Any, parents: Any) -> None:
    report = sub.add_parser("report", parents=[parents.common],
                            help="re-render a finished run's HTML report from its files (no training)",
                            description="Re-render report.html of a finished run from the run store's files only "
                                        "(nothing is trained or explained again).")
    report.add_argument("--domain", required=True, help="domain name or YAML config path (finds runs/<domain>/)")
    report.add_argument("--run", default=None, metavar="RUN_DIR",
                        help="a run folder (runs/<domain>/history/<time>); default: the newest one")
    report.add_argument("--out", default=None, metavar="DIR",
                        help="write report.html into DIR instead of the run folder (e.g. a read-only or "
                             "copied run store)")
    report.add_argument("--share", action="store_true",
                        help="write report-share.html: every number and synthetic image, but no real image, file "
                             "name or folder (for readers outside the team); report.html is left as it is")
    report.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.cli_args import config_from_args
    from reports.html import latest_run_dir, report_stage

    config = config_from_args(args)
    run_dir = Path(args.run) if args.run else latest_run_dir(config.runs_root, config.name)
    if run_dir is None or not (run_dir / "run.json").is_file():
        where = run_dir if run_dir else Path(config.runs_root) / config.name / "history"
        raise DataError(f"no finished run to report on: {where} has no run.json; run `synth-augment run --domain "
                        f"{config.name}` first (or pass --runs-root / --run)")
    check_outputs_intact(run_dir)
    out_dir = Path(args.out) if args.out is not None else run_dir
    try:
        report = report_stage(config, run_dir, out_dir, share=args.share)
    except OSError as exc:
        raise DataError(f"cannot write into {out_dir}: {exc.strerror or exc}; pass --out to a writable folder") from None
    print(f"report: {report.path} ({report.size_bytes:,} bytes)")
    return 0


def check_outputs_intact(run_dir: Path) -> None:
    """The stage outputs a report is rendered from are as their stages wrote them (pipeline.verify):
    a results.csv edited by hand must not sit beside a report that disagrees with it unnoticed."""
    from pipeline.run_record import read_run_record
    from pipeline.verify import problems

    domain_dir = run_dir.parent.parent  # runs/<domain>/history/<time>
    for name, info in read_run_record(run_dir).get("stages", {}).items():
        key = info.get("key") if isinstance(info, dict) else None
        folder = domain_dir / name / str(key)
        found = problems(folder) if key and folder.is_dir() else []
        if found:
            rel, what = found[0]
            raise DataError(f"{folder / rel} is {what}; the report would disagree with it: re-run `synth-augment "
                            f"run` (it recomputes the {name} stage) or delete {folder}")
