"""Pipeline stages as plain functions over small values (paths, hashes, configs).

Each stage computes a cache key from its inputs' content and the config sections it reads, and
returns at once with the stored outputs when that key is already complete in the run store.
Prefect tasks wrap these functions one to one; the CLI and the benchmarks call them directly.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.config import DomainConfig, hash_payload
from pipeline.errors import DataError
from pipeline.ingest import discover
from pipeline.locks import notice
from pipeline.near_duplicates import group_listing, group_notes
from pipeline.split import TEST, TRAIN, Split, make_split, split_key, verify_split
from pipeline.store import RunStore, atomic_write_json, atomic_write_table, atomic_write_text, read_json, read_table
from pipeline.validate import ValidationResult, check_protocol_feasible, sha256_file, validate


@dataclass
class IngestOutput:
    key: str
    directory: Path
    manifest_path: Path  # usable images (parquet; a CSV copy sits beside it)
    quarantine_path: Path  # rejected files with reasons
    notes: list[str]
    summary: dict[str, object]
    cached: bool = False


@dataclass
class SplitOutput:
    key: str
    directory: Path
    split_path: Path  # manifest + split column (parquet; CSV copy beside it)
    split_hash: str
    summary: dict[str, object]
    cached: bool = False


def resolve_data_path(config: DomainConfig, data_path: str | os.PathLike[str] | None) -> Path:
    """The dataset location: ``--data`` wins over the config's ``data.path``; relative paths are kept as given."""
    chosen = data_path if data_path is not None else config.data.path
    if chosen is None:
        raise DataError(f"domain {config.name!r} has no data path: pass --data PATH (an ImageFolder root or a "
                        f"CSV/parquet manifest) or set data.path in its config")
    return Path(chosen).expanduser()


def ingest_stage(config: DomainConfig, data_path: str | os.PathLike[str] | None, progress: bool = True) -> IngestOutput:
    """Discover and validate the dataset; reuse the stored result when no file and no setting changed."""
    location = resolve_data_path(config, data_path)
    discovery = discover(location, config.data.class_names)
    fingerprint = _listing_fingerprint(discovery.candidates)
    key = hash_payload({"files": fingerprint, "data": {**config.to_dict()["data"], "path": None},
                        "root": str(discovery.root)})
    store = RunStore(config.runs_root, config.name)
    with store.lock("ingest", key):
        return _ingest_or_reuse(config, discovery, key, store, progress)


def _ingest_or_reuse(config: DomainConfig, discovery: Any, key: str, store: RunStore, progress: bool) -> IngestOutput:
    directory = store.stage_dir("ingest", key)
    outputs = (directory / "manifest.parquet", directory / "quarantine.parquet")
    if store.is_complete("ingest", key):
        summary = store.read_summary("ingest", key)
        result = ValidationResult(read_table(outputs[0]), read_table(outputs[1]))
        check_protocol_feasible(result, config.data, config.split)
        return IngestOutput(key, directory, *outputs, notes=summary.get("notes", []), summary=summary, cached=True)

    result = validate(discovery.candidates, config.data, config.split, progress=progress)
    atomic_write_table(outputs[0], result.manifest)
    atomic_write_table(outputs[1], result.quarantine)
    atomic_write_table(directory / "near_duplicates.parquet", group_listing(result.manifest))
    notes = discovery.notes + group_notes(result.manifest, config.data.near_duplicate_bits)
    atomic_write_text(directory / "notes.txt", "\n".join(notes) + ("\n" if notes else ""))
    summary = {**result.summary(), "root": str(discovery.root), "layout": discovery.layout,
               "candidates": int(len(discovery.candidates)), "notes": notes}
    store.mark_complete("ingest", key, summary)
    store.latest_link("ingest", key)
    return IngestOutput(key, directory, *outputs, notes=notes, summary=summary)


def split_stage(config: DomainConfig, manifest_path: str | os.PathLike[str]) -> SplitOutput:
    """Compute the 20/80 split once per (images, split settings, seed) and verify it on every use."""
    manifest = read_table(manifest_path)
    key = split_key(manifest, config.split, config.seed)
    store = RunStore(config.runs_root, config.name)
    with store.lock("split", key):
        return _split_or_reuse(config, manifest, key, store)


def _split_or_reuse(config: DomainConfig, manifest: pd.DataFrame, key: str, store: RunStore) -> SplitOutput:
    directory = store.stage_dir("split", key)
    split_path = directory / "split.parquet"
    if store.is_complete("split", key):
        table = read_table(split_path)
        verify_split(table)
        summary = store.read_summary("split", key)
        moved = with_current_paths(table, manifest)
        if moved is not None:  # same images, same split: only where they live changed
            notice(f"split/{key}: the dataset's files now live at {_common_folder(moved['path'])}; "
                   f"the stored split is re-listed there (same images, same split)")
            atomic_write_table(split_path, moved)
            store.mark_complete("split", key, summary)
        return SplitOutput(key, directory, split_path, summary["split_hash"], summary, cached=True)

    split = make_split(manifest, config.split, config.seed)
    atomic_write_table(split_path, split.table)
    summary = split.summary()
    atomic_write_json(directory / "split.json", summary)
    store.mark_complete("split", key, summary)
    store.latest_link("split", key)
    return SplitOutput(key, directory, split_path, split.split_hash, summary)


def with_current_paths(table: pd.DataFrame, manifest: pd.DataFrame) -> pd.DataFrame | None:
    """The stored split re-listed with this ingest's file locations, or None when they are the same.

    The split's key is the images' content, not their location: a dataset moved (or a store copied to a
    machine where it lives elsewhere) re-uses the split, whose table must then name the files where they
    are now. sha256 is unique within a manifest (exact duplicates collapse at ingest)."""
    here = manifest.set_index(manifest["sha256"].astype(str))
    sha = table["sha256"].astype(str)
    if not sha.isin(here.index).all():
        return None  # not the same images (cannot happen under one key); leave the table as it is
    paths, relpaths = here.loc[sha, "path"].astype(str).to_numpy(), here.loc[sha, "relpath"].astype(str).to_numpy()
    if (table["path"].astype(str).to_numpy() == paths).all() and (table["relpath"].astype(str).to_numpy() == relpaths).all():
        return None
    return table.assign(path=paths, relpath=relpaths)


def _common_folder(paths: pd.Series) -> str:
    return os.path.commonpath(list(paths.astype(str))) if len(paths) else "?"


def load_split(split_path: str | os.PathLike[str]) -> Split:
    """Read a stored split and prove it is leak-free before anyone trains on it."""
    table = read_table(split_path)
    verify_split(table)
    meta = read_json(Path(split_path).with_name("split.json"))
    return Split(table=table, split_hash=meta["split_hash"], seed=meta["seed"],
                 train_fraction=meta["train_fraction"], grouped=meta["grouped"])


def _listing_fingerprint(candidates: pd.DataFrame) -> list[tuple[str, str, str, str]]:
    """(path, label, patient, sha256) per file: the content itself, never (size, mtime).

    A file rewritten with its size and mtime kept (``cp -p``, ``touch -r``, a restore) must not reuse
    a stale ingest; hashing is cheap next to decoding (README, "Data": measured on brain-mri).
    """
    paths = list(candidates["path"])
    with ThreadPoolExecutor(max_workers=4) as pool:
        digests = list(pool.map(_digest_or_error, paths))
    rows = [(path, label, "" if patient is None else str(patient), digest) for path, label, patient, digest
            in zip(paths, candidates["label"], candidates["patient_id"], digests)]
    return sorted(rows)


def _digest_or_error(path: str) -> str:
    try:
        return sha256_file(path)
    except OSError as exc:  # validate quarantines it with the reason; here it only changes the key
        return f"unreadable:{exc.errno}"


__all__ = ["IngestOutput", "SplitOutput", "ingest_stage", "split_stage", "load_split", "resolve_data_path",
           "TRAIN", "TEST"]
