"""What a finished stage wrote, recorded at completion and checked before reuse.

A stage's ``_COMPLETE`` marker used to be trusted blindly: a truncated PNG, parquet or weight file,
or a results CSV edited by hand, was reused as if it were what the stage wrote. Now ``mark_complete``
first writes ``_OUTPUTS.json``: every file's size, and its sha256 when the file is small enough to
hash cheaply on every reuse (weights and checkpoints are checked by size only). ``is_complete``
compares; a missing, truncated or edited file is named in one line, deleted (it is a derived output:
the stage rewrites it) and the stage counts as unfinished, so it is recomputed. Stages resume, so a
recompute redoes only what is gone (synthesis re-renders the missing PNGs, a generator re-exports
from its last checkpoint, classifiers reassemble from their stored fits).
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

from pipeline.integrity import file_sha256

HASH_LIMIT_BYTES = 8 << 20  # files up to this size are hashed (PNGs, tables, JSON); larger: size only
# Not outputs of the stage's computation: markers, Prefect's cache records, locks, temporaries, training
# checkpoints (continuations check those by loading them), and the quality stage's filter/gate files,
# which are rewritten after completion from settings outside the stage key.
SKIP_PATTERNS = ("_COMPLETE", "_OUTPUTS.json", "_prefect-*", "*.lock", ".*.tmp", "checkpoints/*",
                 "gate.json", "filtered-*")


def _skipped(relpath: str) -> bool:
    name = relpath.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(relpath, p) or fnmatch.fnmatch(name, p) for p in SKIP_PATTERNS)


def describe(folder: Path) -> dict[str, list[Any]]:
    """{relative path: [size, sha256 or None]} of every output file under ``folder``."""
    files: dict[str, list[Any]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if _skipped(rel):
            continue
        size = path.stat().st_size
        files[rel] = [size, file_sha256(path) if size <= HASH_LIMIT_BYTES else None]
    return files


def record_outputs(folder: Path) -> Path:
    """Write ``_OUTPUTS.json`` (before the marker: a marker always has its record)."""
    from pipeline.atomic import atomic_write_json

    return atomic_write_json(folder / "_OUTPUTS.json", {"version": 1, "files": describe(folder)})


def problems(folder: Path) -> list[tuple[str, str]]:
    """(relative path, what is wrong) for every recorded output that is not as it was written."""
    record_path = folder / "_OUTPUTS.json"
    if not record_path.is_file():
        return []  # a store from before records existed: trusted as before
    try:
        recorded = json.loads(record_path.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return [("_OUTPUTS.json", "unreadable")]
    found: list[tuple[str, str]] = []
    for rel, (size, digest) in recorded.items():
        path = folder / rel
        try:
            actual = path.stat().st_size
        except OSError:
            found.append((rel, "missing"))
            continue
        if actual != size:
            found.append((rel, f"truncated ({actual} of {size} bytes)" if actual < size else
                          f"changed since the stage finished ({actual} bytes, recorded {size})"))
        elif digest is not None and file_sha256(path) != digest:
            found.append((rel, "edited since the stage finished (sha256 differs)"))
    return found


def repair_or_accept(folder: Path) -> bool:
    """True when every recorded output is intact; else name the damage in one line, delete the damaged
    files, the record and the marker (so the stage recomputes them) and return False."""
    from pipeline.locks import notice

    found = problems(folder)
    if not found:
        return True
    first, what = found[0]
    more = f" and {len(found) - 1} more file(s)" if len(found) > 1 else ""
    notice(f"{folder / first} is {what}{more}; recomputing {folder.parent.name}/{folder.name}")
    for rel, _ in found:
        target = folder / rel
        if target.is_file() and rel != "_OUTPUTS.json":
            target.unlink()
    for name in ("_COMPLETE", "_OUTPUTS.json"):
        try:
            (folder / name).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            from pipeline.errors import DataError

            raise DataError(f"{folder / name}: cannot remove ({exc.strerror}); delete {folder} to recompute "
                            f"that stage") from None
    return False


__all__ = ["record_outputs", "problems", "repair_or_accept", "describe"]
