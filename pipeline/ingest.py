"""Find a dataset's labelled image files: an ImageFolder tree or a CSV/parquet manifest.

The result is a candidate table (path, relpath, label, patient_id) plus notes about what was
ignored and why. Nothing is opened or decoded here; ``pipeline.validate`` does that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.errors import DataError
from pipeline.imageio import is_image_path

MANIFEST_SUFFIXES = frozenset({".csv", ".parquet"})
CANDIDATE_COLUMNS = ["path", "relpath", "label", "patient_id"]


@dataclass
class Discovery:
    """What a dataset location holds, before any file is opened."""

    root: Path
    layout: str  # "imagefolder" or "manifest"
    candidates: pd.DataFrame  # CANDIDATE_COLUMNS
    notes: list[str] = field(default_factory=list)  # ignored files and folders, with the reason


def discover(location: str | Path, class_names: list[str] | None = None) -> Discovery:
    """List a dataset's labelled files; fail with a specific message when there is nothing usable."""
    location = Path(location).expanduser()
    if not location.exists():
        raise DataError(f"dataset not found: {location} does not exist (pass --data PATH, or set data.path "
                        f"in the domain config)")
    if location.is_file():
        if location.suffix.lower() not in MANIFEST_SUFFIXES:
            raise DataError(f"{location}: a dataset is a folder with one sub-folder per class, or a CSV/parquet "
                            f"manifest with columns path,label[,patient_id]; got a {location.suffix or 'plain'} file")
        discovery = _from_manifest(location)
    else:
        discovery = _from_image_folder(location)
    _check_classes(discovery, class_names or [])
    return discovery


def _from_image_folder(root: Path) -> Discovery:
    notes: list[str] = []
    rows: list[dict[str, object]] = []
    entries = sorted(root.iterdir(), key=lambda p: p.name)
    if not entries:
        raise DataError(f"dataset folder {root} is empty: expected one sub-folder per class with images in it")
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            notes.append(f"ignored {entry.name}: a file beside the class folders, not an image of any class")
            continue
        label = entry.name
        found = 0
        for path in sorted(p for p in entry.rglob("*") if p.is_file()):
            rel = path.relative_to(root)
            if any(part.startswith(".") for part in rel.parts):
                continue
            if not is_image_path(path):
                notes.append(f"ignored {rel.as_posix()}: not an image file extension")
                continue
            rows.append({"path": str(path.resolve()), "relpath": rel.as_posix(), "label": label,
                         "patient_id": None})
            found += 1
        if found == 0:
            notes.append(f"class folder {label}/ holds no image files")
    return Discovery(root=root.resolve(), layout="imagefolder", candidates=_frame(rows), notes=notes)


def _from_manifest(manifest: Path) -> Discovery:
    try:
        table = pd.read_csv(manifest, dtype=str) if manifest.suffix.lower() == ".csv" else pd.read_parquet(manifest)
    except Exception as exc:  # pandas raises many parser errors; the user needs the file name and the cause
        raise DataError(f"{manifest}: cannot read the manifest: {exc}") from None
    missing = [c for c in ("path", "label") if c not in table.columns]
    if missing:
        raise DataError(f"{manifest}: manifest lacks column(s) {', '.join(missing)}; required columns are "
                        f"path,label (optional patient_id); found {', '.join(map(str, table.columns))}")
    notes = [f"ignored manifest column {c!r}" for c in table.columns if c not in ("path", "label", "patient_id")]
    base = manifest.parent.resolve()
    rows = []
    for record in table.itertuples(index=False):
        raw_path, label = getattr(record, "path"), getattr(record, "label")
        if pd.isna(raw_path) or pd.isna(label) or not str(label).strip():
            notes.append(f"ignored manifest row with an empty path or label: {raw_path!r}, {label!r}")
            continue
        path = Path(str(raw_path)).expanduser()
        path = path if path.is_absolute() else base / path
        patient = getattr(record, "patient_id", None)
        rows.append({"path": str(path.resolve()), "relpath": str(raw_path), "label": str(label).strip(),
                     "patient_id": None if patient is None or pd.isna(patient) else str(patient)})
    return Discovery(root=base, layout="manifest", candidates=_frame(rows), notes=notes)


def _check_classes(discovery: Discovery, class_names: list[str]) -> None:
    found = sorted(discovery.candidates["label"].unique().tolist())
    if class_names:
        missing = [c for c in class_names if c not in found]
        extra = [c for c in found if c not in class_names]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"no images for configured class(es) {', '.join(missing)}")
            if extra:
                parts.append(f"unexpected class(es) {', '.join(extra)}")
            raise DataError(f"{discovery.root}: {'; '.join(parts)}. The domain config expects classes "
                            f"{', '.join(class_names)}; found {', '.join(found) or 'none'}")
    if len(found) < 2:
        raise DataError(f"{discovery.root}: found {len(found)} class(es) with images "
                        f"({', '.join(found) or 'none'}); a classifier needs at least 2")


def _frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=CANDIDATE_COLUMNS)
    return frame.astype({"path": str, "relpath": str, "label": str}).astype({"patient_id": object})
