"""``synth-augment classifiers``: train and evaluate the CNN panel for one domain from the command line.

    synth-augment classifiers --domain covid-ct --set classifiers.arms=[real]
    synth-augment classifiers --domain brain-mri --synthetic runs/brain-mri/synthesis/<key>/manifest.parquet

Ingest and split are reused from the run store (or made); arms that need a synthetic set are
skipped, with a note, when --synthetic is not given.
"""

from __future__ import annotations

import argparse
from typing import Any

import pandas as pd


def register(sub: Any, parents: Any) -> None:
    """Add the ``classifiers`` sub-command to the main parser (see flows/cli.py)."""
    cmd = sub.add_parser("classifiers", parents=[parents.domain], help="train and evaluate the CNN panel (all arms)",
                         description=__doc__.split("\n\n")[0])
    cmd.add_argument("--synthetic", default=None, help="synthetic manifest (parquet/CSV: path, label, sha256)")
    cmd.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from classifiers.stage import ENSEMBLE, classifiers_stage
    from pipeline.cli_args import config_from_args
    from pipeline.stages import ingest_stage, split_stage

    config = config_from_args(args)
    ingest = ingest_stage(config, args.data, progress=not args.quiet)
    split = split_stage(config, ingest.manifest_path)
    out = classifiers_stage(config, split.split_path, args.synthetic, progress=not args.quiet)
    table = pd.read_parquet(out.results_path)
    state = "reused" if out.cached else f"done in {out.summary['seconds']} s"
    print(f"[classifiers] {state}  key={out.key}  fits={out.summary['fits']} "
          f"(reused {out.summary['fits_reused']})")
    ensemble = table[table["fold"] == ENSEMBLE]
    columns = ["arm", "architecture", "test_accuracy", "f1_macro", "roc_auc_ovr", "test_loss",
               *(["dev_accuracy"] if "dev_accuracy" in ensemble else [])]
    print(ensemble[columns].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    for arm, chosen in out.summary.get("chosen_per_arm", {}).items():
        print(f"chosen for {arm}: {chosen['architecture']} ({chosen['chosen_by']})")
    for note in out.summary.get("notes", []):
        print(f"note: {note}")
    print(f"results table: {out.results_path.with_suffix('.csv')}")
    return 0
