"""One end-to-end run of one domain: the stages in order, the resolved config saved beside them.

``run_domain`` is what ``synth-augment run`` and the Prefect flow call. Each stage is cached in
the run store, so re-running with unchanged data and config is cheap and a killed run resumes.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import DomainConfig
from pipeline.stages import IngestOutput, SplitOutput, ingest_stage, split_stage
from pipeline.store import atomic_write_json, atomic_write_text


@dataclass
class RunRecord:
    """What one run did: where its record lives, each stage's key/output and time."""

    run_dir: Path
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, name: str, seconds: float, **info: Any) -> None:
        self.stages[name] = {"seconds": round(seconds, 3), **{k: _jsonable(v) for k, v in info.items()}}
        atomic_write_json(self.run_dir / "run.json", {"stages": self.stages})


def start_run(config: DomainConfig) -> RunRecord:
    """Create ``runs/<domain>/history/<utc time>/`` holding the resolved config (config.yaml)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    run_dir = Path(config.runs_root) / config.name / "history" / stamp
    run_dir.mkdir(parents=True, exist_ok=False)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
    return RunRecord(run_dir=run_dir)


def run_domain(config: DomainConfig, data_path: str | os.PathLike[str] | None = None,
               progress: bool = True) -> RunRecord:
    """Run every stage that exists for ``config``; returns the run record."""
    record = start_run(config)
    started = time.perf_counter()
    ingest: IngestOutput = ingest_stage(config, data_path, progress=progress)
    record.add("ingest", time.perf_counter() - started, key=ingest.key, cached=ingest.cached,
               manifest=ingest.manifest_path, quarantine=ingest.quarantine_path, summary=ingest.summary)

    started = time.perf_counter()
    split: SplitOutput = split_stage(config, ingest.manifest_path)
    record.add("split", time.perf_counter() - started, key=split.key, cached=split.cached,
               split=split.split_path, split_hash=split.split_hash, summary=split.summary)
    return record


def _jsonable(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value
