"""Run records that travel with their store: paths inside the store are written relative to it.

A run record (``<root>/<domain>/history/<time>/run.json``) names every stage's outputs. Written as
absolute paths, a copied store would read the original's files (and a moved one would name files that
are gone). Paths inside the domain's store folder are therefore written as ``store:<relative path>``
and resolved against the folder the record is read from; paths outside the store (the dataset, an
export folder elsewhere) stay as they were. The in-memory ``RunRecord`` keeps absolute paths.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipeline.store import atomic_write_json, read_json

STORE_PREFIX = "store:"
RECORD_NAME = "run.json"


def domain_dir_of(run_dir: str | os.PathLike[str]) -> Path:
    """``<root>/<domain>`` of ``<root>/<domain>/history/<time>``."""
    return Path(run_dir).parent.parent


def store_relative(value: Any, domain_dir: str | os.PathLike[str]) -> Any:
    """``value`` with every string that names a path inside ``domain_dir`` rewritten as ``store:<relative>``."""
    roots = {os.path.abspath(domain_dir), os.path.realpath(domain_dir)}

    def convert(item: Any) -> Any:
        if isinstance(item, dict):
            return {key: convert(inner) for key, inner in item.items()}
        if isinstance(item, list):
            return [convert(inner) for inner in item]
        if isinstance(item, str) and "/" in item and not item.startswith(STORE_PREFIX) and "\n" not in item:
            for root in roots:
                for candidate in (os.path.abspath(item), os.path.realpath(item)):
                    if candidate == root or candidate.startswith(root + os.sep):
                        return STORE_PREFIX + Path(os.path.relpath(candidate, root)).as_posix()
        return item

    return convert(value)


def store_absolute(value: Any, domain_dir: str | os.PathLike[str]) -> Any:
    """The inverse of ``store_relative`` against the folder the record is read from (wherever it now is)."""
    if isinstance(value, dict):
        return {key: store_absolute(inner, domain_dir) for key, inner in value.items()}
    if isinstance(value, list):
        return [store_absolute(inner, domain_dir) for inner in value]
    if isinstance(value, str) and value.startswith(STORE_PREFIX):
        return str(Path(domain_dir) / value[len(STORE_PREFIX):])
    return value


def write_run_record(run_dir: str | os.PathLike[str], record: dict[str, Any]) -> Path:
    return atomic_write_json(Path(run_dir) / RECORD_NAME, store_relative(record, domain_dir_of(run_dir)))


def read_run_record(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """A run record with its store paths resolved against where the run folder is now."""
    return store_absolute(read_json(Path(run_dir) / RECORD_NAME), domain_dir_of(run_dir))
