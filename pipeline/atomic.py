"""All-or-nothing writes and the readers that go with them (the run store's floor, and everyone's).

Every write goes to a temporary file in the same folder and is moved into place with ``os.replace``,
so a reader never sees half a file and a crash never leaves one behind. Temporary names carry the
writer's process id (``.<name>.<pid>-<random>.tmp``), so two runs never share one and a clean-up removes
only temporaries whose writer is gone. Folders are written aside and swapped in (``atomic_folder``):
there is never a moment without the folder. Files get the mode ``open`` would give them (0666 minus the
umask), not mkstemp's 0600.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pandas as pd

from pipeline.errors import DataError

TEMP_RE = re.compile(r"^\..*\.(\d+)-[^.]*\.tmp$")  # .<name>.<pid>-<random>.tmp
STALE_AFTER_S = 6 * 3600  # a temporary without a live writer, or older than this, is debris


def temp_prefix(target: Path) -> str:
    """The prefix of ``target``'s temporaries: hidden, named after it and tagged with this process's id."""
    return f".{target.name}.{os.getpid()}-"


def current_umask() -> int:
    """The process umask, read without changing it where the platform allows (Linux /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: Path, folder: bool = False) -> None:
    """Give a mkstemp/mkdtemp result the mode a plain open/mkdir would have given it."""
    os.chmod(path, (0o777 if folder else 0o666) & ~current_umask())


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success move it into place, on error delete it."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(target), suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    honour_umask(tmp)
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
    """A stored table; a damaged file is a one-line error naming it and what to delete, not a traceback."""
    path = Path(path).with_suffix(".parquet")
    try:
        return pd.read_parquet(path)
    except FileNotFoundError:
        raise DataError(f"{path} is missing; delete {path.parent} to recompute that stage") from None
    except Exception as exc:  # pyarrow raises several types for truncated or foreign files
        raise DataError(f"{path} is unreadable ({type(exc).__name__}); it was damaged after it was written: "
                        f"delete {path.parent} to recompute that stage") from None


def atomic_save_with(target: str | os.PathLike[str], save: Callable[[Path], None]) -> Path:
    """Atomic write through any library's ``save(path)`` function (torch.save, PIL, matplotlib)."""
    with atomic_path(target) as tmp:
        save(tmp)
    return Path(target)


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty folder beside ``target`` to fill; on success swap it in for ``target``.

    The swap exchanges the two names in one step where the kernel can (Linux ``renameat2``), else
    renames the old folder aside, the new one in, and deletes the old: readers always find a whole
    folder, old or new. The temporary name is unique to this process; on error it is deleted.
    """
    import shutil

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(target), suffix=".tmp", dir=target.parent))
    honour_umask(tmp, folder=True)
    try:
        yield tmp
        old = swap_in(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def swap_in(new: Path, target: Path) -> Path | None:
    """Put folder ``new`` at ``target``; returns where the previous folder now is (to delete), if any."""
    try:
        os.rename(new, target)  # no folder there yet (an empty one is replaced too)
        return None
    except OSError:
        if not target.exists():
            raise
    if _exchange(new, target):
        return new  # the names were exchanged: ``new`` now holds the old folder
    aside = Path(tempfile.mkdtemp(prefix=temp_prefix(target), suffix=".tmp", dir=target.parent))
    os.rename(target, aside / "old")
    os.rename(new, target)
    return aside


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return result == 0


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def remove_stale_temporaries(directory: str | os.PathLike[str], max_age_s: float = STALE_AFTER_S) -> list[Path]:
    """Delete temporaries a hard kill (SIGKILL) left in ``directory``; returns what was deleted.

    Only debris goes: a temporary whose writer process is gone, or one older than ``max_age_s``
    (names without a process id, or a pid reused since). Another live run's in-flight files stay.
    """
    removed: list[Path] = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    now = time.time()
    for tmp in directory.glob(".*.tmp"):
        match = TEMP_RE.match(tmp.name)
        try:
            old = now - tmp.stat().st_mtime > max_age_s
        except OSError:
            continue
        if old or (match is not None and not pid_alive(int(match.group(1)))):
            if tmp.is_dir():
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (a zombie or another user's counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
