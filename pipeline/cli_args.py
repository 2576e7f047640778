"""The arguments every command shares, and the config they resolve to (the ground floor of the CLI).

Sub-commands live with their floor (``flows/generator_cli.py``, ``classifiers/cli.py``,
``reports/cli.py``) and are wired into one parser by the front door, ``flows/cli.py``; they import only
this module, so no floor imports the one above it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from pipeline.config import (PROFILES, DomainConfig, available_budgets, available_domains, deep_merge,
                             load_domain_config, parse_override)


@dataclass(frozen=True)
class Parents:
    """Shared argument groups a sub-command can inherit: ``common`` (profile, budget, --set, ...) and
    ``domain`` (common plus --domain and --data)."""

    common: argparse.ArgumentParser
    domain: argparse.ArgumentParser


def build_parents() -> Parents:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--profile", choices=PROFILES, default=None,
                        help="machine profile (default: the budget's, else cpu)")
    common.add_argument("--budget", default=None,
                        help=f"a named budget ({', '.join(available_budgets())}) or a budget YAML path")
    common.add_argument("--runs-root", default=None, help="run store root (default: config runs_root, ./runs)")
    common.add_argument("--seed", type=int, default=None, help="override the config's seed")
    common.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set split.cv_folds=3 (value parsed as YAML; "
                             "repeatable)")
    common.add_argument("--quiet", action="store_true", help="no progress bars")

    domain_args = argparse.ArgumentParser(add_help=False, parents=[common])
    domain_args.add_argument("--domain", required=True,
                             help=f"domain name ({', '.join(available_domains())}) or a YAML config path")
    domain_args.add_argument("--data", default=None, help="dataset: ImageFolder root or CSV/parquet manifest "
                                                          "(default: the config's data.path)")
    return Parents(common, domain_args)


def config_from_args(args: argparse.Namespace, domain: str | None = None) -> DomainConfig:
    """The resolved config for a command: ``--domain`` (or ``domain``), ``--profile``, ``--budget``, then
    ``--set``, ``--runs-root`` and ``--seed`` as the last layer."""
    return load_domain_config(domain or args.domain, args.profile, overrides_from_args(args), budget=args.budget)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """``--set``, ``--runs-root`` and ``--seed`` as one overrides mapping."""
    overrides: dict[str, Any] = {}
    for text in args.overrides:
        overrides = deep_merge(overrides, parse_override(text))
    if args.runs_root is not None:
        overrides["runs_root"] = args.runs_root
    if args.seed is not None:
        overrides["seed"] = args.seed
    return overrides
