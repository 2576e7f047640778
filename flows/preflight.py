"""Checks that need only the config (and the file system), run before the first stage trains anything.

Each of these used to surface late: an architecture too big for the classifier image size crashed
the quality stage with a raw torch error after the generator had trained for an hour; a read-only
runs root was a PermissionError traceback. Checks that need the data (class sizes against folds)
run in ingest, which also precedes every training stage.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pipeline.config import DomainConfig
from pipeline.errors import ConfigError, DataError

CLASSIFIER_STAGES = frozenset({"reference", "quality", "classifiers", "explain", "report"})  # use classifiers.architectures


def check_runs_root_writable(config: DomainConfig) -> Path:
    """The domain's folder under ``runs_root`` exists (or can be made) and takes a file; else one line."""
    folder = Path(config.runs_root) / config.name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise DataError(f"runs root {Path(config.runs_root).resolve()} is not writable ({exc.strerror or exc} "
                        f"at {exc.filename or folder}); pass --runs-root to a writable folder") from None
    return folder


def check_before_training(config: DomainConfig, stages: Sequence[str]) -> None:
    """Every config-only feasibility check of the stages about to run, before any of them trains.

    The generator's image size against its UNet depth is checked when the config is loaded
    (``GeneratorConfig``); here: every classifier architecture against ``classifiers.image_size``.
    """
    if CLASSIFIER_STAGES & set(stages):
        from classifiers import zoo  # lazy: torch and timm load only when a run reaches this check

        zoo.check_architectures(list(config.classifiers.architectures))
        for name in config.classifiers.architectures:
            zoo.check_input_size(name, config.classifiers.image_size)
    if config.seed < 0 or config.seed >= 2**32:  # DomainConfig bounds it; a constructed config may not be
        raise ConfigError(f"seed = {config.seed} is invalid; expected an integer in [0, 4294967296)")
    check_runs_root_writable(config)
