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
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import DomainConfig
from flows.code_version import code_version
from flows.preflight import check_before_training
from pipeline.run_record import write_run_record
from pipeline.stages import ingest_stage, split_stage
from pipeline.store import atomic_write_text


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
        write_run_record(self.run_dir, {"meta": self.meta, "stages": self.stages})


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


# ----------------------------------------------------------------------------------------------
# The stage sequence: one definition for `synth-augment run` (run_domain) and the Prefect flow
# (flows/synth_augment.py turns every entry into a task). Adding a stage is one Stage(...) line here.


@dataclass(frozen=True)
class Stage:
    """One pipeline stage as both front doors see it.

    ``run(config, done, progress)`` calls the stage function; ``done`` maps earlier stage names (and
    ``"data"``, the dataset path) to their outputs. ``info(output)`` is what run.json records.
    ``cache_key(config, done)``, when given, is the stage's run-store key computed *without* running
    it, by the same function the stage keys its folder with: the flow uses it (with the config sections
    in ``reads``) as the Prefect cache key. Stages without one (quality, classifiers, explain) run with
    Prefect caching off and the run store decides (one authority): their keys need the stage's own
    reading first (quality: the reference classifier and extractors; classifiers: arm tables, folds and
    resolved weights, computed by ``classifiers.stage.read_inputs``, whose fits the flow caches by fit
    key; explain: the results table and held-out scores), and a stored key returns at once.
    ``retries`` > 0 only for idempotent stages (a retry recomputes nothing that is stored). ``tags``
    (``gpu``) let a tag concurrency limit cap heavy tasks. ``fan_out`` marks a stage the flow splits
    into independent tasks (classifiers: plan, one task per fit, assemble); ``when(config)`` False
    skips the stage (quality when ``quality.enabled`` is off).
    """

    name: str
    run: Callable[[DomainConfig, dict[str, Any], bool], Any]
    info: Callable[[Any], dict[str, Any]]
    cache_key: Callable[[DomainConfig, dict[str, Any]], str] | None = None
    reads: tuple[str, ...] = ()  # config sections the stage's output depends on (empty: all of them)
    retries: int = 0
    tags: tuple[str, ...] = ()
    fan_out: bool = False
    when: Callable[[DomainConfig], bool] = lambda config: True  # False: the stage is skipped for this config
    # non-empty: run only when one of these stages runs too (stages_to_run); a function of the config when
    # that depends on settings (the reference: synthesis needs it only with synthesis.filter)
    needed_by: tuple[str, ...] | Callable[[DomainConfig], tuple[str, ...]] = ()
    locks_itself: bool = False  # True: the stage holds its own (stage, key) lock (pipeline.locks)


def _ingest(config: DomainConfig, done: dict[str, Any], progress: bool) -> Any:
    return ingest_stage(config, done.get("data"), progress=progress)


def _ingest_info(out: Any) -> dict[str, Any]:
    return dict(key=out.key, cached=out.cached, manifest=out.manifest_path, quarantine=out.quarantine_path,
                summary=out.summary)


def _split(config: DomainConfig, done: dict[str, Any], progress: bool) -> Any:
    return split_stage(config, done["ingest"].manifest_path)


def _split_info(out: Any) -> dict[str, Any]:
    return dict(key=out.key, cached=out.cached, split=out.split_path, split_hash=out.split_hash, summary=out.summary)


def _reference(config: DomainConfig, done: dict[str, Any], progress: bool) -> Any:
    from classifiers.reference import reference_stage

    return reference_stage(config, done["split"].split_path, progress=progress)


def _reference_key(config: DomainConfig, done: dict[str, Any]) -> str:
    from classifiers.reference import reference_key
    from pipeline.stages import load_split

    return reference_key(config, load_split(done["split"].split_path))


def _reference_info(out: Any) -> dict[str, Any]:
    return dict(key=out.key, cached=out.cached, fits=out.fit_keys, summary=out.summary)


def _generator(config: DomainConfig, done: dict[str, Any], progress: bool) -> Any:
    from pipeline.generator.stage import train_generator_stage

    return train_generator_stage(config, done["split"].split_path, progress=progress)


def _generator_key(config: DomainConfig, done: dict[str, Any]) -> str:
    from pipeline.generator.stage import plan_generator
    from pipeline.stages import load_split

    split = load_split(done["split"].split_path)  # the generator depends on the training sample alone
    return plan_generator(config, split.training_hash, config.data.resolve_class_names(split.table["label"])).key


def _generator_info(out: Any) -> dict[str, Any]:
    return dict(key=out.key, cached=out.cached, pipeline=out.pipeline_path, pipeline_hash=out.pipeline_hash,
                summary=out.summary)


def _selection(config: DomainConfig, done: dict[str, Any], progress: bool) -> Any:
    from pipeline.generator.stage import selection_stage

    return selection_stage(config, done["generator"], done.get("reference"), progress=progress)


def _selection_key(config: DomainConfig, done: dict[str, Any]) -> str:
    from pipeline.generator.selection import plan_key

    return plan_key(config, done["generator"], done["reference"].key)


def _selection_info(out: Any) -> dict[str, Any]:
    plan = out.record
    return dict(key=out.key, cached=out.cached, plan=out.plan_path, plan_hash=out.plan_hash,
                summary={k: plan.get(k) for k in ("checkpoint_step", "guidance_scale", "strength",
                                                   "reference_cv_accuracy", "images_per_class", "warnings")})


def _synthesis(config: DomainConfig, done: dict[str, Any], progress: bool) -> Any:
    from pipeline.generator.stage import synthesis_stage

    return synthesis_stage(config, done["generator"], progress=progress, reference=done.get("reference"))


def _synthesis_key(config: DomainConfig, done: dict[str, Any]) -> str:
    from pipeline.generator.stage import planned_synthesis_key

    # with synthesis.select: includes the plan's hash (the plan's key holds the reference's key)
    return planned_synthesis_key(config, done["generator"], done.get("reference"))


def _synthesis_info(out: Any) -> dict[str, Any]:
    return dict(key=out.key, cached=out.cached, manifest=out.manifest_path, summary=out.summary)


def _quality(config: DomainConfig, done: dict[str, Any], progress: bool) -> Any:
    from pipeline.quality.stage import quality_stage

    # raises QualityGateError (after saving its results) when a stop gate fails
    return quality_stage(config, done["split"].split_path, done["synthesis"].manifest_path, progress=progress,
                         reference=done.get("reference"))


def _quality_info(out: Any) -> dict[str, Any]:
    from pipeline.quality.gate import summary_lines

    return dict(key=out.key, cached=out.cached, report=out.directory / "quality.json", manifest=out.manifest_path,
                summary=out.summary, gate=out.gate, lines=summary_lines(out.summary, out.gate))


def synthetic_manifest(done: dict[str, Any]) -> str | None:
    """The synthetic set the classifiers train on: the quality stage's selection when it ran, else the
    synthesis stage's set (None when the run has neither)."""
    chosen = done.get("quality") or done.get("synthesis")
    return None if chosen is None else str(chosen.manifest_path)


def _classifiers(config: DomainConfig, done: dict[str, Any], progress: bool) -> Any:
    from classifiers.stage import classifiers_stage

    return classifiers_stage(config, done["split"].split_path, synthetic_manifest(done), progress=progress)


def _classifiers_info(out: Any) -> dict[str, Any]:
    return dict(key=out.key, cached=out.cached, results=out.results_path, summary=out.summary)


def _explain(config: DomainConfig, done: dict[str, Any], progress: bool) -> Any:
    from reports.lime_explain import explain_stage

    synthesis = done.get("synthesis")  # LIME explains generated images, whatever the quality filter kept
    return explain_stage(config, done["classifiers"].results_path,
                         None if synthesis is None else synthesis.manifest_path, progress=progress)


def _explain_info(out: Any) -> dict[str, Any]:
    return dict(key=out.key, cached=out.cached, directory=out.directory, summary=out.summary)


def _report(config: DomainConfig, done: dict[str, Any], progress: bool) -> Any:
    from reports.html import report_stage

    return report_stage(config, done["run_dir"])  # reads run.json as written so far: every stage before it


def _report_info(out: Any) -> dict[str, Any]:
    return dict(cached=False, path=out.path, size_bytes=out.size_bytes)


STAGES: tuple[Stage, ...] = (
    Stage("ingest", _ingest, _ingest_info, locks_itself=True),
    Stage("split", _split, _split_info, locks_itself=True),
    Stage("generator", _generator, _generator_info, cache_key=_generator_key, tags=("gpu",),
          reads=("seed", "data", "split", "generator"), locks_itself=True),
    # the real arm's fold fits, which selection, the synthesis filter and the quality stage judge with (after the generator, so
    # `--until generator` never trains them); the classifiers stage reuses them
    Stage("reference", _reference, _reference_info, cache_key=_reference_key, tags=("gpu",),
          reads=("seed", "data", "split", "classifiers"), locks_itself=True,
          needed_by=lambda config: ("selection", "quality") + (("synthesis",) if config.synthesis.filter != "off"
                                                               else ())),
    # synthesis.select: the plan (checkpoint, guidance, strength), its own stage so that synthesis's key, which
    # holds the plan's hash, is known before the synthesis task starts (the flow's cache key)
    Stage("selection", _selection, _selection_info, cache_key=_selection_key, tags=("gpu",),
          reads=("seed", "data", "split", "generator", "synthesis", "classifiers"), locks_itself=True,
          when=lambda config: config.synthesis.select),
    Stage("synthesis", _synthesis, _synthesis_info, cache_key=_synthesis_key, retries=2, tags=("gpu",),
          reads=("seed", "data", "split", "generator", "synthesis"), locks_itself=True),
    Stage("quality", _quality, _quality_info, tags=("gpu",), when=lambda config: config.quality.enabled),
    Stage("classifiers", _classifiers, _classifiers_info, tags=("gpu",), fan_out=True),
    Stage("explain", _explain, _explain_info, tags=("gpu",)),
    Stage("report", _report, _report_info, locks_itself=True),  # writes only into this run's own folder
)
ALL_STAGES: tuple[str, ...] = tuple(stage.name for stage in STAGES)


def stages_until(until: str) -> tuple[Stage, ...]:
    """The stages in order up to and including ``until``."""
    if until not in ALL_STAGES:
        raise ValueError(f"until must be one of {', '.join(ALL_STAGES)}, got {until!r}")
    return STAGES[:ALL_STAGES.index(until) + 1]


def stages_to_run(config: DomainConfig, until: str) -> tuple[Stage, ...]:
    """The stages a run up to ``until`` performs for this config, in order: those whose ``when`` holds, less
    those only needed by stages that do not run (no reference classifier for ``--until synthesis`` without
    selection, nor when the quality stage is off and nothing selects)."""
    applicable = [stage for stage in stages_until(until) if stage.when(config)]
    names = {stage.name for stage in applicable}
    needs = {stage.name: stage.needed_by(config) if callable(stage.needed_by) else stage.needed_by
             for stage in applicable}
    return tuple(stage for stage in applicable if not needs[stage.name] or names.intersection(needs[stage.name]))


def run_domain(config: DomainConfig, data_path: str | os.PathLike[str] | None = None, progress: bool = True,
               until: str = ALL_STAGES[-1]) -> RunRecord:
    """Run the stages in order up to and including ``until``; returns the run record."""
    stages = stages_to_run(config, until)
    check_before_training(config, [stage.name for stage in stages])
    record = start_run(config)
    record.meta["device"] = device_description()
    record.meta["code_version"] = code_version()
    record.meta["command"] = " ".join(shlex.quote(arg) for arg in sys.argv)
    done: dict[str, Any] = {"data": data_path, "run_dir": record.run_dir}
    for stage in stages:
        with _timed() as elapsed, stage_wide_lock(config, stage):
            done[stage.name] = stage.run(config, done, progress)
        record.add(stage.name, elapsed[0], **stage.info(done[stage.name]))
    return record


def stage_wide_lock(config: DomainConfig, stage: Stage) -> AbstractContextManager[None]:
    """Stages that lock their own (stage, key) need nothing here; the others (quality, classifiers,
    explain) are serialised per domain, so a second run waits and then reuses what the first stored."""
    if stage.locks_itself:
        return nullcontext()
    from pipeline.store import RunStore

    return RunStore(config.runs_root, config.name).lock(stage.name, "_stage")


def _jsonable(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value
