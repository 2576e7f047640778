"""What code produced a run: the commit a person can check out, and a digest Prefect's records are keyed on.

Two answers to two questions. ``code_version`` is provenance (run.json, the report): the checkout's git commit,
"+dirty" when it has uncommitted changes. ``code_digest`` hashes every module's source, so a Prefect result
written by other code - committed or not - is never returned.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from importlib import metadata
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "classifiers", "reports", "flows")


def package_version() -> str:
    try:
        return metadata.version("synth-augment")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def code_version() -> str:
    """The checkout's git commit (with "+dirty" when it has uncommitted changes), else the package version."""
    try:
        commit = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return f"synth-augment {package_version()} (no git checkout)"


@functools.cache
def code_digest() -> str:
    """The package version plus a hash of every module's source (computed once per process)."""
    digest = hashlib.sha256(package_version().encode())
    for package in PACKAGES:
        for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
            digest.update(path.relative_to(PROJECT_ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return f"{package_version()}-{digest.hexdigest()[:12]}"
