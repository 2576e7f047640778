"""The run store: one folder per domain, stage outputs under content-hash keys, atomic writes.

Layout::

    <root>/<domain>/<stage>/<key>/...      e.g. runs/brain-mri/split/3f2a9c01d4e5b6a7/split.json

``key`` is a hash of everything the stage's output depends on (input content hashes and the
config sections it reads), so an unchanged nightly run finds its outputs and a killed run
resumes: a stage is done when its ``_COMPLETE`` marker exists, and the marker is written last.

Every write goes to a temporary file in the same folder and is moved into place with
``os.replace``, so a reader never sees half a file and a crash never leaves one behind. Temporary
names carry the writer's process id (``.<name>.<pid>-<random>.tmp``), so two runs never share one
and a clean-up removes only temporaries whose writer is gone. Folders (exports, the generator
pipeline) are written aside and swapped in (``atomic_folder``): there is never a moment without
the folder. Files get the mode ``open`` would give them (0666 minus the umask), not mkstemp's 0600:
the umask decides who may read a store (README, "Run store").

Two runs may share a store: ``RunStore.lock(stage, key)`` serialises the work on one key
(``pipeline.locks``), and what a stage wrote is recorded at completion (sizes, and sha256 of small
files) and verified before reuse (``pipeline.verify``).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import pandas as pd

# the atomic writes and readers are pipeline.atomic's; re-exported here, where most stages import them
from pipeline.atomic import (STALE_AFTER_S, TEMP_RE, atomic_folder, atomic_open, atomic_path,  # noqa: F401
                             atomic_save_with, atomic_write_json, atomic_write_table, atomic_write_text,
                             current_umask, honour_umask, pid_alive, read_json, read_table,
                             remove_stale_temporaries, swap_in, temp_prefix)
from pipeline.config import hash_payload
from pipeline.errors import DataError

COMPLETE_MARKER = "_COMPLETE"
OUTPUTS_RECORD = "_OUTPUTS.json"  # sizes and hashes of a finished stage's files (pipeline.verify)


def manifest_hash(manifest: pd.DataFrame) -> str:
    """Content hash of a manifest: which images (sha256) with which labels; paths and order do not matter."""
    rows = sorted(zip(map(str, manifest["sha256"]), map(str, manifest["label"])))
    return hash_payload({"train": rows})  # "train": the payload the generator's checkpoints were first keyed with


class RunStore:
    """Stage folders for one domain under ``root``; a stage output is addressed by (stage, key)."""

    def __init__(self, root: str | os.PathLike[str], domain: str) -> None:
        self.root = Path(root)
        self.domain = domain
        self.domain_dir = self.root / domain

    def stage_dir(self, stage: str, key: str) -> Path:
        path = self.domain_dir / stage / key
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"cannot create {path}: {exc.strerror or exc} (runs root {self.root}); pass "
                            f"--runs-root to a writable folder") from None
        return path

    def lock(self, stage: str, key: str) -> contextlib.AbstractContextManager[None]:
        """Hold the (stage, key) lock: one run computes a key, a second waits and then reuses it."""
        from pipeline.locks import hold

        return hold(self.domain_dir / stage / key, f"{self.domain}/{stage}/{key}")

    def is_complete(self, stage: str, key: str) -> bool:
        """The marker exists and every recorded output is still as written; a damaged output is named
        in one line, removed, and the stage counts as not complete (so it is recomputed)."""
        folder = self.domain_dir / stage / key
        if not (folder / COMPLETE_MARKER).is_file():
            return False
        from pipeline.verify import repair_or_accept

        return repair_or_accept(folder)

    def mark_complete(self, stage: str, key: str, summary: dict[str, Any] | None = None) -> Path:
        """Written last: its presence means every other output of the stage is in place (and recorded)."""
        from pipeline.verify import record_outputs

        folder = self.stage_dir(stage, key)
        record_outputs(folder)
        return atomic_write_json(folder / COMPLETE_MARKER, summary or {})

    def read_summary(self, stage: str, key: str) -> dict[str, Any]:
        return read_json(self.domain_dir / stage / key / COMPLETE_MARKER)

    def latest_link(self, stage: str, key: str) -> Path:
        """Record the newest key of a stage (a small JSON file; symlinks are not portable)."""
        return atomic_write_json(self.domain_dir / stage / "LATEST.json", {"key": key})

    def latest_key(self, stage: str) -> str | None:
        path = self.domain_dir / stage / "LATEST.json"
        return read_json(path)["key"] if path.is_file() else None
