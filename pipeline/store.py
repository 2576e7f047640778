"""The run store: one folder per domain, stage outputs under content-hash keys, atomic writes.

Layout::

    <root>/<domain>/<stage>/<key>/...      e.g. runs/brain-mri/split/3f2a9c01d4e5b6a7/split.json

``key`` is a hash of everything the stage's output depends on (input content hashes and the
config sections it reads), so an unchanged nightly run finds its outputs and a killed run
resumes: a stage is done when its ``_COMPLETE`` marker exists, and the marker is written last.

Every write goes to a temporary file in the same folder and is moved into place with
``os.replace``, so a reader never sees half a file and a crash never leaves one behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pandas as pd

from pipeline.config import hash_payload

COMPLETE_MARKER = "_COMPLETE"


def manifest_hash(manifest: pd.DataFrame) -> str:
    """Content hash of a manifest: which images (sha256) with which labels; paths and order do not matter."""
    rows = sorted(zip(map(str, manifest["sha256"]), map(str, manifest["label"])))
    return hash_payload({"train": rows})  # "train": the payload the generator's checkpoints were first keyed with


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success move it into place, on error delete it."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_open(target: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """``open`` for writing that is all-or-nothing."""
    with atomic_path(target) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle


def atomic_write_text(target: str | os.PathLike[str], text: str) -> Path:
    with atomic_open(target, "w", encoding="utf-8") as handle:
        handle.write(text)
    return Path(target)


def atomic_write_json(target: str | os.PathLike[str], payload: Any) -> Path:
    return atomic_write_text(target, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def atomic_write_table(target: str | os.PathLike[str], table: pd.DataFrame, csv_copy: bool = True) -> Path:
    """Write a table as parquet (typed, exact) and, by default, a CSV copy for people and spreadsheets."""
    target = Path(target).with_suffix(".parquet")
    with atomic_path(target) as tmp:
        table.to_parquet(tmp, index=False)
    if csv_copy:
        with atomic_path(target.with_suffix(".csv")) as tmp:
            table.to_csv(tmp, index=False)
    return target


def read_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    return pd.read_parquet(Path(path).with_suffix(".parquet"))


def atomic_save_with(target: str | os.PathLike[str], save: Callable[[Path], None]) -> Path:
    """Atomic write through any library's ``save(path)`` function (torch.save, PIL, matplotlib)."""
    with atomic_path(target) as tmp:
        save(tmp)
    return Path(target)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


class RunStore:
    """Stage folders for one domain under ``root``; a stage output is addressed by (stage, key)."""

    def __init__(self, root: str | os.PathLike[str], domain: str) -> None:
        self.root = Path(root)
        self.domain = domain
        self.domain_dir = self.root / domain

    def stage_dir(self, stage: str, key: str) -> Path:
        path = self.domain_dir / stage / key
        path.mkdir(parents=True, exist_ok=True)
        return path

    def is_complete(self, stage: str, key: str) -> bool:
        return (self.domain_dir / stage / key / COMPLETE_MARKER).is_file()

    def mark_complete(self, stage: str, key: str, summary: dict[str, Any] | None = None) -> Path:
        """Written last: its presence means every other output of the stage is in place."""
        return atomic_write_json(self.stage_dir(stage, key) / COMPLETE_MARKER, summary or {})

    def read_summary(self, stage: str, key: str) -> dict[str, Any]:
        return read_json(self.domain_dir / stage / key / COMPLETE_MARKER)

    def latest_link(self, stage: str, key: str) -> Path:
        """Record the newest key of a stage (a small JSON file; symlinks are not portable)."""
        return atomic_write_json(self.domain_dir / stage / "LATEST.json", {"key": key})

    def latest_key(self, stage: str) -> str | None:
        path = self.domain_dir / stage / "LATEST.json"
        return read_json(path)["key"] if path.is_file() else None
