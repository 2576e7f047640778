"""One end-to-end run of one domain: the stages in order, the resolved config saved beside them.

``run_domain`` is what ``synth-augment run``, the protocol benchmark and (stage by stage) the
Prefect flow call. Each stage is cached in the run store, so re-running with unchanged data and
config is cheap and a killed run resumes. The run record (``history/<time>/run.json``) holds
every stage's key, whether it was reused, its wall time and the process's peak memory after it.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import DomainConfig
from pipeline.stages import ingest_stage, split_stage
from pipeline.store import atomic_write_json, atomic_write_text

ALL_STAGES: tuple[str, ...] = ("ingest", "split", "generator", "synthesis", "quality", "classifiers")


@dataclass
class RunRecord:
    """What one run did: where its record lives, each stage's key/output, time and memory."""

    run_dir: Path
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, seconds: float, **info: Any) -> None:
        self.stages[name] = {"seconds": round(seconds, 3), "peak_rss_mb": peak_rss_mb(),
                             **{k: _jsonable(v) for k, v in info.items()}}
        self.save()

    def save(self) -> None:
        atomic_write_json(self.run_dir / "run.json", {"meta": self.meta, "stages": self.stages})


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def device_description() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}"
    return f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads " \
           f"{torch.get_num_threads()}"


def start_run(config: DomainConfig) -> RunRecord:
    """Create ``runs/<domain>/history/<utc time>/`` holding the resolved config (config.yaml)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    run_dir = Path(config.runs_root) / config.name / "history" / stamp
    run_dir.mkdir(parents=True, exist_ok=False)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
    record = RunRecord(run_dir=run_dir, meta={"started_utc": stamp, "domain": config.name,
                                              "profile": config.profile, "seed": config.seed})
    record.save()
    return record


@contextmanager
def _timed() -> Iterator[list[float]]:
    box = [time.perf_counter()]
    yield box
    box[0] = time.perf_counter() - box[0]


def run_domain(config: DomainConfig, data_path: str | os.PathLike[str] | None = None, progress: bool = True,
               until: str = "classifiers") -> RunRecord:
    """Run the stages in order up to and including ``until``; returns the run record."""
    if until not in ALL_STAGES:
        raise ValueError(f"until must be one of {', '.join(ALL_STAGES)}, got {until!r}")
    stop = ALL_STAGES.index(until)
    record = start_run(config)
    record.meta["device"] = device_description()

    with _timed() as elapsed:
        ingest = ingest_stage(config, data_path, progress=progress)
    record.add("ingest", elapsed[0], key=ingest.key, cached=ingest.cached, manifest=ingest.manifest_path,
               quarantine=ingest.quarantine_path, summary=ingest.summary)

    with _timed() as elapsed:
        split = split_stage(config, ingest.manifest_path)
    record.add("split", elapsed[0], key=split.key, cached=split.cached, split=split.split_path,
               split_hash=split.split_hash, summary=split.summary)
    if stop <= ALL_STAGES.index("split"):
        return record

    from pipeline.generator.stage import synthesis_stage, train_generator_stage

    with _timed() as elapsed:
        generator = train_generator_stage(config, split.split_path, progress=progress)
    record.add("generator", elapsed[0], key=generator.key, cached=generator.cached,
               pipeline=generator.pipeline_path, pipeline_hash=generator.pipeline_hash,
               summary=generator.summary)
    if stop <= ALL_STAGES.index("generator"):
        return record

    with _timed() as elapsed:
        synthesis = synthesis_stage(config, generator, progress=progress)
    record.add("synthesis", elapsed[0], key=synthesis.key, cached=synthesis.cached,
               manifest=synthesis.manifest_path, summary=synthesis.summary)
    if stop <= ALL_STAGES.index("synthesis"):
        return record

    synthetic_manifest = synthesis.manifest_path
    if config.quality.enabled:
        from pipeline.quality.stage import quality_stage, summary_lines

        with _timed() as elapsed:  # raises QualityGateError (after saving its results) when a stop gate fails
            quality = quality_stage(config, split.split_path, synthesis.manifest_path, progress=progress)
        record.add("quality", elapsed[0], key=quality.key, cached=quality.cached, report=quality.directory / "quality.json",
                   manifest=quality.manifest_path, summary=quality.summary, gate=quality.gate,
                   lines=summary_lines(quality))
        synthetic_manifest = quality.manifest_path
    if stop <= ALL_STAGES.index("quality"):
        return record

    from classifiers.stage import classifiers_stage

    with _timed() as elapsed:
        classifiers = classifiers_stage(config, split.split_path, str(synthetic_manifest), progress=progress)
    record.add("classifiers", elapsed[0], key=classifiers.key, cached=classifiers.cached,
               results=classifiers.results_path, summary=classifiers.summary)
    return record


def _jsonable(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value
