"""Every image a stage reads is the image ingest recorded: its bytes still hash to the recorded sha256.

The split's leak check compares recorded hashes; without this, a held-out file overwritten by a
training image after the split would be read as held out (a silent train/test leak), and the
decode cache, keyed by the recorded hash, would serve pixels of content that no longer exists.
Checking costs one sha256 pass over the files (README, "Data": seconds on brain-mri); within one
process a file already verified is not re-hashed while its (size, mtime, ctime, inode) stay the same
(ctime cannot be set back by ``touch`` or ``cp -p``, so a rewrite always changes it).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from pipeline.errors import IntegrityError

_VERIFIED: dict[str, tuple[int, int, int, int, str]] = {}
_GUARD = threading.Lock()


def _stat_key(path: str) -> tuple[int, int, int, int]:
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file, read in 1 MiB blocks (the one hashing helper: ingest, verification, checkpoints)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _known_good(path: str, recorded: str) -> bool:
    try:
        stat_key = _stat_key(path)
    except OSError:
        return False
    known = _VERIFIED.get(path)
    return known is not None and known[:4] == stat_key and known[4] == recorded


def _check_one(path: str, recorded: str) -> str | None:
    """None when ``path`` holds the recorded content, else a one-line description of what is wrong."""
    try:
        stat_key = _stat_key(path)
    except OSError as exc:
        return f"{path} is {'missing' if isinstance(exc, FileNotFoundError) else 'unreadable'} (recorded at ingest)"
    with _GUARD:
        known = _VERIFIED.get(path)
    if known is not None and known[:4] == stat_key and known[4] == recorded:
        return None
    try:
        actual = file_sha256(path)
    except OSError as exc:
        return f"{path} is unreadable ({exc.strerror or exc})"
    if actual != recorded:
        return f"{path} changed after ingest (sha256 {actual[:12]}, recorded {recorded[:12]})"
    with _GUARD:
        _VERIFIED[path] = (*stat_key, recorded)
    return None


def verify_files(paths: Sequence[str], sha256s: Sequence[str], workers: int = 4) -> None:
    """Raise IntegrityError naming the first file whose content is not what was recorded."""
    if len(paths) != len(sha256s):
        raise ValueError(f"paths ({len(paths)}) and sha256s ({len(sha256s)}) differ in length")
    pairs = [(str(p), str(s)) for p, s in zip(paths, sha256s)]
    todo = [(p, s) for p, s in pairs if not _known_good(p, s)]  # a stat each: the common, cheap case
    with ThreadPoolExecutor(max_workers=workers) as pool:
        found = [problem for problem in pool.map(lambda pair: _check_one(*pair), todo) if problem]
    if found:
        more = f" (and {len(found) - 1} more file(s))" if len(found) > 1 else ""
        raise IntegrityError(f"{found[0]}{more}; re-ingest the dataset (synth-augment validate --domain ... "
                             f"--data ...) so that every stage sees the current files, then re-run")


def forget() -> None:
    """Drop the in-process memo (tests that rewrite files within one process)."""
    with _GUARD:
        _VERIFIED.clear()
