"""Inter-process locks for the run store: one lock file per (stage, key), so two runs can share a store.

The first run to reach a stage takes its lock and computes; a second run on the same key waits
(printing one line that says what it waits for) and then finds the stage complete and reuses it.
Locks are ``filelock`` locks (``flock`` on POSIX): the operating system drops them when the holder
exits, even on SIGKILL, so a killed run never leaves a store locked. Instances are shared per path
within a process, which makes a lock re-entrant there (a stage may call a helper that locks again).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from pipeline.errors import DataError

_LOCKS: dict[str, FileLock] = {}
_GUARD = threading.Lock()


def lock_file_of(target: str | os.PathLike[str]) -> Path:
    """The lock file of a folder or file: ``<target>.lock`` beside it (never inside, so swaps keep it)."""
    target = Path(target)
    return target.with_name(f"{target.name}.lock")


def _lock(path: Path) -> FileLock:
    with _GUARD:
        lock = _LOCKS.get(str(path))
        if lock is None:
            lock = _LOCKS[str(path)] = FileLock(str(path), thread_local=False)
        return lock


def notice(message: str) -> None:
    """One line to stderr for the user (not a log record: the CLI and pytest both show it)."""
    print(f"synth-augment: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def hold(target: str | os.PathLike[str], what: str) -> Iterator[None]:
    """Hold ``target``'s lock; when another process holds it, say so once and wait for it."""
    if os.environ.get("RANK", "0") != "0":  # accelerate/torchrun: rank 0 holds the lock for the whole group
        yield
        return
    path = lock_file_of(target)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {path.parent}: {exc.strerror or exc}; pass --runs-root to a writable "
                        f"folder") from None
    lock = _lock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        notice(f"waiting for another run that is computing {what} (lock {path}); its result will be reused")
        lock.acquire()
    except OSError as exc:
        raise DataError(f"cannot lock {path}: {exc.strerror or exc}; pass --runs-root to a writable folder") from None
    try:
        yield
    finally:
        lock.release()


def held_elsewhere(target: str | os.PathLike[str]) -> bool:
    """True when another process holds ``target``'s lock right now (never blocks)."""
    path = lock_file_of(target)
    if not path.exists():
        return False
    lock = _lock(path)
    if lock.is_locked:  # this process holds it
        return False
    try:
        lock.acquire(timeout=0)
    except (Timeout, OSError):
        return True
    lock.release()
    return False
