"""The Prefect flow ``synth-augment``: the same stage functions as ``synth-augment run``, as tasks.

    prefect deployment run synth-augment/brain-mri --param data=/data/brain-mri     # via prefect.yaml
    synth-augment demo                                                              # in-process, no server

One stage sequence (``flows.run.STAGES``) drives both front doors: ``run_domain`` calls each
stage in turn, this flow wraps each in a task (a stage added there becomes a task here with no
change to this file). Tasks take and return small values only: the config, paths, hashes and
summary dicts of the stage outputs.

Caching: a task's Prefect cache key is its stage's run-store key (input content hashes + config)
plus the config sections it reads and the code version, and the result is persisted *inside that stage's
run-store folder* (``runs/<domain>/<stage>/<key>/_prefect-<hash>``). A re-run with unchanged
inputs finds the record and skips the task (state ``Cached``); a record whose stage is no longer
complete in the run store is deleted before the lookup, so the run store stays the authority.
Where no record matches (new config, new code), the stage function still reuses what the run
store holds, so nothing finished is ever retrained. Classifier fits fan out as one task per
(arm, architecture, fold), keyed by the fit key, on the thread pool (one at a time by default:
torch on a 2-core CPU must not run two jobs at once) or on Dask (``task_runner="dask"``).
"""

from __future__ import annotations

import dataclasses
import math
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE, CachePolicy
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from flows.code_version import code_digest, code_version
from flows.preflight import check_before_training
from flows.progress import GeneratorProgress, relay_progress, show_progress
from flows.run import (ALL_STAGES, STAGES, Stage, device_description, stage_wide_lock, stages_to_run, start_run,
                       synthetic_manifest)
from pipeline.config import DomainConfig, hash_payload, load_domain_config
from pipeline.errors import ConfigError
from pipeline.store import RunStore

FLOW_NAME = "synth-augment"
DEMO_DOMAINS = {"demo": "L", "demo-rgb": "RGB"}
PREFECT_RECORD_PREFIX = "_prefect-"
AtLeastOne = Annotated[int, Field(ge=1)]
StageName = Literal[ALL_STAGES]  # type: ignore[valid-type]  # the parameter schema lists the stage names


# ----------------------------------------------------------------------------------------------
# Configuration: the CLI's layering (profile < domain < budget < overrides)


def resolve_config(domain: str, profile: str | None = None, budget: str | None = None,
                   overrides: dict[str, Any] | None = None, runs_root: str | None = None) -> DomainConfig:
    """The run's config, layered as the CLI does it (pipeline.config): profile, domain, budget, overrides."""
    if runs_root is not None:
        overrides = {**(overrides or {}), "runs_root": runs_root}
    return load_domain_config(domain, profile, overrides, budget=budget)


def demo_data_path(config: DomainConfig, progress: bool = False) -> str:
    """The built-in phantom dataset for the demo domains (written once, then reused as is)."""
    from pipeline.demo_data import PhantomSpec, demo_dataset

    return str(demo_dataset(config.runs_root, PhantomSpec(mode=DEMO_DOMAINS[config.name], seed=config.seed), progress))


# ----------------------------------------------------------------------------------------------
# Cache keys = run-store keys; results persisted in the run store


def record_key(domain: str, stage: str, key: str, runs_root: str, payload: Any) -> str:
    """Where a task's Prefect result lives, relative to the runs root: inside the stage's own folder.

    A record of a stage that is not complete in the run store (deleted marker, interrupted rerun)
    is stale: it is removed here so Prefect cannot return it.
    """
    name = f"{PREFECT_RECORD_PREFIX}{hash_payload([code_digest(), payload])}"
    store = RunStore(runs_root, domain)
    if not store.is_complete(stage, key):
        folder = store.domain_dir / stage / key
        for stale in folder.glob(f"{PREFECT_RECORD_PREFIX}*"):
            stale.unlink(missing_ok=True)
    return f"{domain}/{stage}/{key}/{name}"


def prune_records(folder: Path) -> None:
    """After a stage ran: keep only the newest Prefect record in its folder (older ones describe older states)."""
    records = sorted(folder.glob(f"{PREFECT_RECORD_PREFIX}*"), key=lambda p: p.stat().st_mtime_ns)
    for old in records[:-1]:
        old.unlink(missing_ok=True)


@dataclasses.dataclass
class StageCache(CachePolicy):
    """Prefect cache key of a stage task: its run-store key + the config sections it reads + code version."""

    stage: str = ""

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> str | None:
        stage = _stage(self.stage)
        config: DomainConfig = inputs["config"]
        if stage.cache_key is None:
            return None
        resolved = config.to_dict()
        sections = {k: resolved[k] for k in (stage.reads or resolved) if k != "runs_root"}
        return record_key(config.name, stage.name, stage.cache_key(config, inputs["done"]), config.runs_root,
                          sections)


@dataclasses.dataclass
class FitCache(CachePolicy):
    """Prefect cache key of one classifier fit: its fit key (arm content, architecture, fold, settings)."""

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> str | None:
        from classifiers.train import FIT_STAGE

        spec = inputs["spec"]
        return record_key(spec.domain, FIT_STAGE, spec.key, spec.runs_root, "fit")


def _stage(name: str) -> Stage:
    return next(stage for stage in STAGES if stage.name == name)


# ----------------------------------------------------------------------------------------------
# Tasks: thin calls of the stage functions


def _run_stage(stage_name: str, config: DomainConfig, done: dict[str, Any], progress: bool = False,
               generator_processes: int = 1) -> Any:
    stage = _stage(stage_name)
    if stage.name == "generator":
        with GeneratorProgress(config, f"{artifact_slug(config.name)}-generator-progress"):
            if generator_processes > 1:
                launch_generator_training(config, done.get("data"), generator_processes)
            return stage.run(config, done, progress)  # after a launch: finds the finished key, loads it
    with stage_wide_lock(config, stage):
        return stage.run(config, done, progress)


def launch_generator_training(config: DomainConfig, data: str | None, processes: int) -> None:
    """Train (or resume) the generator with ``accelerate launch`` on ``processes`` GPUs, same stage function.

    The resolved config goes to the child as a domain YAML file, so the child computes the same key
    and writes the same run-store folder the task then reads.
    """
    import subprocess
    import sys

    import yaml

    from pipeline.store import atomic_write_text

    resolved = config.to_dict()
    target = RunStore(config.runs_root, config.name).domain_dir / "generator" / f"launch-{hash_payload(resolved)}.yaml"
    atomic_write_text(target, yaml.safe_dump(resolved, sort_keys=False))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
               *(["--multi_gpu"] if processes > 1 else []), "-m", "flows.cli", "generator", "train",
               "--domain", str(target), "--profile", config.profile, "--quiet",
               *(["--data", str(data)] if data is not None else [])]
    get_run_logger().info("generator training: " + " ".join(command))
    child = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, errors="replace")
    relay_progress(child.stderr)  # its progress lines into this task's log and the artifact, the rest echoed
    if child.wait() != 0:
        raise subprocess.CalledProcessError(child.returncode, command)


def stage_task(stage: Stage, config: DomainConfig):  # -> prefect Task
    """The task for one stage: named after it, tagged, retried only if idempotent, cached by run-store key."""
    options: dict[str, Any] = dict(name=stage.name, tags=set(stage.tags), retries=stage.retries,
                                   retry_delay_seconds=5 if stage.retries else 0)
    if stage.cache_key is not None:
        options.update(cache_policy=StageCache(stage=stage.name), persist_result=True,
                       result_storage=Path(config.runs_root).resolve())
    else:
        options.update(cache_policy=NO_CACHE, persist_result=False)
    return task(_run_stage, **options)


@dataclasses.dataclass
class FitPlan:
    """The classifier stage's plan: its key and folder, one FitSpec per (arm, architecture, fold)."""

    key: str
    directory: Path
    specs: list[Any]
    notes: list[str]
    started: float  # time.time() when planning began
    cached: Any = None  # the stored ClassifierOutput when the stage key is already complete


@task(name="plan-fits", persist_result=False, cache_policy=NO_CACHE)
def plan_fits_task(config: DomainConfig, done: dict[str, Any], progress: bool = False) -> FitPlan:
    from classifiers.stage import STAGE, ClassifierOutput, plan_fits, read_inputs

    started = time.time()
    inputs = read_inputs(config, done["split"].split_path, synthetic_manifest(done))
    store = RunStore(config.runs_root, config.name)
    directory = store.stage_dir(STAGE, inputs.key)
    if store.is_complete(STAGE, inputs.key):
        cached = ClassifierOutput(inputs.key, directory, directory / "results.parquet",
                                  store.read_summary(STAGE, inputs.key), cached=True)
        return FitPlan(inputs.key, directory, [], [], started, cached)
    specs, notes = plan_fits(config, inputs, directory, progress)
    return FitPlan(inputs.key, directory, specs, notes, started)


@task(name="fit", tags={"gpu"}, cache_policy=FitCache(), persist_result=True)
def fit_task(spec: Any) -> Any:
    """One (arm, architecture, fold): no retries (a retry would restart training from scratch)."""
    from classifiers.train import FIT_STAGE, run_fit

    show_progress()  # also in a Dask worker process: the fit's progress lines into this task run's log
    with RunStore(spec.runs_root, spec.domain).lock(FIT_STAGE, spec.key):  # two flows never train one fit twice
        return run_fit(spec, progress=False)


@task(name="assemble-results", retries=2, retry_delay_seconds=5, persist_result=False, cache_policy=NO_CACHE)
def assemble_task(config: DomainConfig, done: dict[str, Any], plan: FitPlan, results: list[Any]) -> Any:
    """The results table, summary and stage marker from the fits (idempotent: retried on failure)."""
    from classifiers.stage import finish_stage, read_inputs

    inputs = read_inputs(config, done["split"].split_path, synthetic_manifest(done))
    if inputs.key != plan.key:
        raise RuntimeError(f"classifier inputs changed during the run ({plan.key} -> {inputs.key}); run again")
    return finish_stage(config, inputs, plan.directory, results, list(plan.notes), time.time() - plan.started)


# ----------------------------------------------------------------------------------------------
# The flow


def artifact_slug(name: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", name.lower())).strip("-") or "domain"


def make_task_runner(kind: str, dask_address: str | None, dask_workers: int, fit_workers: int):
    """Threads (``fit_workers`` at a time; 1 by default) or Dask: an existing scheduler or a temporary LocalCluster."""
    if kind == "threads":
        return None if fit_workers == 1 else ThreadPoolTaskRunner(max_workers=fit_workers)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:
        raise ConfigError("task_runner: 'dask' needs prefect-dask: pip install -e '.[dask]'") from exc
    if dask_address:
        return DaskTaskRunner(address=dask_address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": dask_workers, "threads_per_worker": 1,
                                          "processes": True, "dashboard_address": None})


def run_fits(config: DomainConfig, done: dict[str, Any], runner: Any, progress: bool) -> tuple[Any, dict[str, Any]]:
    """The classifier stage fanned out: plan, one task per fit on ``runner``, then one results table."""
    plan = plan_fits_task(config, done, progress)
    if plan.cached is not None:
        return plan.cached, {"fits": 0, "fits_cached": 0}
    fit = fit_task.with_options(result_storage=Path(config.runs_root).resolve())
    if runner is None:  # one fit at a time, in the flow's own thread (a resnet18 step: 0.260 s here vs 0.298 s in a pool thread)
        states = [fit(spec, return_state=True) for spec in plan.specs]
        results = [state.result() for state in states]
    else:
        with runner as active:
            futures = [active.submit(fit, parameters={"spec": spec}) for spec in plan.specs]
            states = [future.wait() or future.state for future in futures]
            results = [future.result() for future in futures]
    fits_cached = sum(1 for state, result in zip(states, results) if state.name == "Cached" or result.cached)
    return assemble_task(config, done, plan, results), {"fits": len(results), "fits_cached": fits_cached}


@flow(name=FLOW_NAME, log_prints=True, persist_result=False)
def synth_augment(domain: str = "demo", data: str | None = None, profile: Literal["cpu", "gpu"] | None = None,
                  budget: str | None = None, overrides: dict[str, Any] | None = None, runs_root: str | None = None,
                  until: StageName = ALL_STAGES[-1], task_runner: Literal["threads", "dask"] = "threads",
                  dask_address: str | None = None, dask_workers: AtLeastOne = 2, fit_workers: AtLeastOne = 1,
                  generator_processes: AtLeastOne = 1, progress: bool = False) -> dict[str, Any]:
    """Run every stage of one domain (or up to ``until``) and publish summary, results and report artifacts.

    Args:
        domain: A shipped domain (demo, brain-mri, covid-ct, all-leukemia, ...) or the path of your own domain YAML.
        data: ImageFolder root or CSV/parquet manifest (default: the config's data.path; demo makes its phantoms).
        profile: cpu or gpu (default: the budget's, else cpu).
        budget: A budget name from flows/configs/budgets (e.g. smoke, cpu-quick).
        overrides: Nested config values over everything else, e.g. {"classifiers": {"max_epochs": 3}}.
        runs_root: The run store folder (default: the config's runs_root, ./runs).
        until: The last stage to run.
        task_runner: threads (fit_workers fits at a time) or dask (a LocalCluster or the scheduler at dask_address).
        dask_address: An existing Dask scheduler, e.g. tcp://host:8786 (task_runner=dask).
        dask_workers: Worker processes of the temporary LocalCluster (task_runner=dask, no address).
        fit_workers: Classifier fits at a time on threads (1: torch jobs never share the CPU).
        generator_processes: More than 1 trains the generator with accelerate launch --multi_gpu on that many GPUs.
        progress: Show progress bars (for in-process runs in a terminal).
    """
    logger = get_run_logger()
    show_progress()  # the stages' progress lines (pipeline.progress) into their task run's log (flows.progress)
    config = resolve_config(domain, profile, budget, overrides, runs_root)
    stages = stages_to_run(config, until)
    check_before_training(config, [stage.name for stage in stages])
    if data is None and config.data.path is None and config.name in DEMO_DOMAINS:
        data = demo_data_path(config, progress)
    record = start_run(config)
    record.meta.update(device=device_description(), front_door="prefect", task_runner=task_runner,
                       code_version=code_version(), command=" ".join(shlex.quote(arg) for arg in sys.argv))
    done: dict[str, Any] = {"data": data, "run_dir": record.run_dir}  # the report stage renders this run
    for stage in stages:
        started = time.perf_counter()
        extra: dict[str, Any] = {}
        if stage.fan_out:
            runner = make_task_runner(task_runner, dask_address, dask_workers, fit_workers)
            output, extra = run_fits(config, done, runner, progress)
            extra["prefect_state"] = "Cached" if output.cached else "Completed"
        else:
            state = stage_task(stage, config)(stage.name, config, done, progress, generator_processes,
                                              return_state=True)
            output = state.result()
            if state.name == "Cached" and dataclasses.is_dataclass(output) and hasattr(output, "cached"):
                output = dataclasses.replace(output, cached=True)  # the stored output says how it was made
            elif stage.cache_key is not None:
                prune_records(RunStore(config.runs_root, config.name).domain_dir / stage.name / output.key)
            extra["prefect_state"] = state.name
        done[stage.name] = output
        record.add(stage.name, time.perf_counter() - started, **stage.info(output), **extra)
        logger.info(f"[{stage.name}] {'reused' if getattr(output, 'cached', False) else 'done'} "
                    f"in {time.perf_counter() - started:.1f}s ({extra['prefect_state']})")
    publish_artifacts(config, record.stages, done, record.run_dir)
    return {"run_dir": str(record.run_dir), "stages": _jsonable(record.stages)}


def report_path(done: dict[str, Any]) -> Path | None:
    """The HTML report of the run, when a report stage produced one."""
    report = done.get("report")
    for attribute in ("html_path", "report_path", "path"):
        value = getattr(report, attribute, None)
        if value is not None and Path(value).is_file():
            return Path(value)
    return None


def publish_artifacts(config: DomainConfig, stages: dict[str, dict[str, Any]], done: dict[str, Any],
                      run_dir: Path) -> None:
    """Markdown summary, held-out results table and a link to the report (keys ``<domain>-...``)."""
    slug = artifact_slug(config.name)
    lines = [f"# synth-augment: {config.name} ({config.profile})", "",
             "| stage | state | seconds | key |", "|---|---|---:|---|"]
    for name, info in stages.items():
        lines.append(f"| {name} | {'reused' if info.get('cached') else 'done'} ({info.get('prefect_state', '-')}) | "
                     f"{info['seconds']:.1f} | `{info.get('key', '-')}` |")
    lines += ["", f"Run record and resolved config: `{run_dir}`"]
    classifiers = done.get("classifiers")
    if classifiers is not None:
        import pandas as pd

        table = pd.read_parquet(classifiers.results_path)
        ensemble = table[table["fold"].astype(str) == "ensemble"]
        columns = [c for c in ("arm", "architecture", "test_accuracy", "precision_macro", "recall_macro",
                               "f1_macro", "roc_auc_ovr_macro", "n_test", "dev_accuracy", "n_dev")
                   if c in ensemble.columns]
        rows = [{c: _cell(v) for c, v in row.items()} for row in ensemble[columns].to_dict("records")]
        create_table_artifact(table=rows, key=f"{slug}-results",
                              description=f"{config.name}: held-out real test set, fold ensembles per arm and "
                                          f"architecture ({Path(classifiers.results_path).with_suffix('.csv')})")
        lines += ["", "## Held-out real test accuracy (fold ensemble)", ""]
        lines += [f"- {r['arm']} / {r['architecture']}: {r['test_accuracy']:.3f}" for r in rows]
        lines += ["", f"Results table: `{Path(classifiers.results_path).with_suffix('.csv')}`"]
    report = report_path(done)
    if report is not None:
        create_link_artifact(link=report.resolve().as_uri(), link_text=f"{config.name} report", key=f"{slug}-report",
                             description=f"HTML report of the {config.name} run")
        lines += ["", f"Report: `{report}`"]
    elif classifiers is not None:
        results_csv = Path(classifiers.results_path).with_suffix(".csv").resolve()
        create_link_artifact(link=results_csv.as_uri(), link_text=f"{config.name} results table",
                             key=f"{slug}-report", description="no HTML report stage ran: the results table")
    create_markdown_artifact(markdown="\n".join(lines), key=f"{slug}-summary",
                             description=f"synth-augment run summary for {config.name}")


def _cell(value: Any) -> Any:
    """A JSON-safe table cell: plain Python numbers, 4 decimals, NaN as empty."""
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 4)
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


if __name__ == "__main__":
    synth_augment()
