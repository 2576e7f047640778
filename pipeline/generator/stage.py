"""The generator's two pipeline stages, over small values only (paths, hashes, configs).

    train_generator_stage(config, split_path) -> GeneratorOutput    runs/<domain>/generator/<key>/
    synthesis_stage(config, generator)        -> SynthesisOutput    runs/<domain>/synthesis/<key>/

The generator key hashes the split, the model/training settings, the channel mode, the class
order and the seed, and for a longer run that continues a finished shorter one of the same
settings (a warm restart from its last checkpoint) the shorter run's key and step as well: a
continued generator never sits under a from-scratch key (``plan_generator`` decides which, before
training, for ``synth-augment run`` and the flow alike); the trained generator is exported as a diffusers pipeline folder
(``<key>/pipeline``, loadable with ``ClassConditionalPipeline.from_pretrained``). The synthesis
key hashes that folder's content hash, the sampling settings and the number of images per class. A finished stage returns at
once (``cached=True``); an unfinished one resumes (training from its newest readable
checkpoint, synthesis by filling in missing images).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from pipeline.config import GENERATOR_LEGACY_VALUES, DomainConfig, hash_payload
from pipeline.errors import ConfigError, DataError
from pipeline.generator.checkpoint import folder_sha256
from pipeline.generator.data import check_disjoint, load_training_data, training_order
from pipeline.generator.outputs import GeneratorOutput, SynthesisOutput
from pipeline.generator.sampling import load_pipeline, training_data_of
from pipeline.generator.filtering import FILTERED_FILE, filter_by_reference
from pipeline.generator.synthesis import RealSample, check_labels_distinct, class_counts, image_relpath, synthesize
from pipeline.generator.train import RESUMABLE_CHANGES, train_generator
from pipeline.image_tensors import domain_cache_dir
from pipeline.integrity import file_sha256
from pipeline.locks import notice
from pipeline.quality.judge import ReferenceSource
from pipeline.stages import load_split
from pipeline.store import (COMPLETE_MARKER, RunStore, atomic_save_with, atomic_write_json, atomic_write_table,
                            read_json, read_table)

GENERATOR_STAGE, SYNTHESIS_STAGE = "generator", "synthesis"


def generator_key(config: DomainConfig, training_hash: str, class_names: list[str], with_steps: bool = True,
                  continued_from: dict[str, Any] | None = None) -> str:
    """Cache key of a generator; ``with_steps=False`` gives the key shared by runs that differ only in length
    (its lineage); ``continued_from`` ({"key", "step"}) names the shorter run a warm restart started from."""
    leave_out = RESUMABLE_CHANGES[1:] if with_steps else RESUMABLE_CHANGES
    settings = {k: v for k, v in config.generator.to_dict().items() if k not in leave_out
                and not (k in GENERATOR_LEGACY_VALUES and v == GENERATOR_LEGACY_VALUES[k])}
    payload = {"split_hash": training_hash, "generator": settings, "mode": config.data.mode,
               "class_names": class_names, "seed": config.seed}
    if continued_from is not None:  # only then: from-scratch keys stay as they were
        payload["continued_from"] = continued_from
    return hash_payload(payload)


@dataclass(frozen=True)
class GeneratorPlan:
    """The generator stage's key, decided before training: from scratch, or continuing a shorter finished run."""

    key: str
    lineage: str  # the key of every run that differs from this one only in length
    start: tuple[str, int, Path] | None = None  # (key, step, last checkpoint) of the shorter run it continues


def plan_generator(config: DomainConfig, training_hash: str, class_names: list[str]) -> GeneratorPlan:
    """The generator key both front doors use: a from-scratch run of this length when one is finished or under
    way; else a finished continued run of this length; else a continuation of the longest finished shorter
    run of the same lineage; else from scratch."""
    from pipeline.generator.checkpoint import list_checkpoints

    store = RunStore(config.runs_root, config.name)
    scratch = generator_key(config, training_hash, class_names)
    lineage = generator_key(config, training_hash, class_names, with_steps=False)
    if store.is_complete(GENERATOR_STAGE, scratch) or list_checkpoints(
            store.domain_dir / GENERATOR_STAGE / scratch / "checkpoints"):
        return GeneratorPlan(scratch, lineage)
    steps = config.generator.train_steps
    finished = finished_runs(store, lineage)
    continued = sorted((s.get("continued_from") or 0, k) for k, s in finished.items() if s["steps"] == steps)
    if continued:
        return GeneratorPlan(continued[-1][1], lineage)
    start = shorter_run(finished, steps)
    if start is None:
        return GeneratorPlan(scratch, lineage)
    return GeneratorPlan(generator_key(config, training_hash, class_names,
                                       continued_from={"key": start[0], "step": start[1]}), lineage, start)


def finished_runs(store: RunStore, lineage: str) -> dict[str, dict[str, Any]]:
    """key -> summary of every complete generator run of ``lineage``."""
    runs = {}
    for marker in store.domain_dir.glob(f"{GENERATOR_STAGE}/*/summary.json"):
        summary = json.loads(marker.read_text())
        if summary.get("lineage") == lineage and (marker.parent / COMPLETE_MARKER).is_file():
            runs[marker.parent.name] = {**summary, "steps": int(summary.get("steps", 0)), "_folder": marker.parent}
    return runs


def shorter_run(finished: dict[str, dict[str, Any]], steps: int) -> tuple[str, int, Path] | None:
    """(key, step, checkpoint) of the longest finished run shorter than ``steps`` whose last checkpoint loads."""
    from pipeline.generator.checkpoint import list_checkpoints

    best: tuple[str, int, Path] | None = None
    for key, summary in finished.items():
        done = summary["steps"]
        if done < steps and (best is None or done > best[1]):
            found = list_checkpoints(summary["_folder"] / "checkpoints")
            if found and found[-1][0] == done and loads(found[-1][1]):
                best = (key, done, found[-1][1])
    return best


def copy_start(start: tuple[str, int, Path] | None, ckpt_dir: Path) -> int | None:
    """Copy the shorter run's last checkpoint into ``ckpt_dir`` (when it has none) and return its step: training
    then resumes from it, and the cosine schedule restarts from that step's place in the longer schedule (a warm
    restart, recorded as ``continued_from``)."""
    from pipeline.generator.checkpoint import list_checkpoints

    if start is None or list_checkpoints(ckpt_dir):
        return None
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    atomic_save_with(ckpt_dir / start[2].name, lambda tmp: shutil.copyfile(start[2], tmp))
    for guide in start[2].parent.glob("guide-*.pt"):  # the lineage's autoguidance guide goes along
        atomic_save_with(ckpt_dir / guide.name, lambda tmp, guide=guide: shutil.copyfile(guide, tmp))
    return start[1]


def loads(checkpoint: Path) -> bool:
    """Whether a checkpoint file is whole (a truncated copy must not pass for a resume point)."""
    try:
        torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception:  # truncated zip, bad pickle: not a resume point
        notice(f"{checkpoint} is unreadable (truncated or damaged); not continuing from it")
        return False
    return True


def train_generator_stage(config: DomainConfig, split_path: str | os.PathLike[str],
                          progress: bool = True) -> GeneratorOutput:
    """Train the class-conditional generator on the split's training side (resuming when interrupted)."""
    split = load_split(split_path)
    class_names = config.data.resolve_class_names(split.table["label"])
    plan = plan_generator(config, split.training_hash, class_names)
    store = RunStore(config.runs_root, config.name)
    with store.lock(GENERATOR_STAGE, plan.key):  # a second run on this key waits, then reuses the first's generator
        return _train_or_reuse(config, split, Path(split_path), class_names, plan, store, progress)


def _train_or_reuse(config: DomainConfig, split: Any, split_path: Path, class_names: list[str], plan: GeneratorPlan,
                    store: RunStore, progress: bool) -> GeneratorOutput:
    key = plan.key
    directory = store.stage_dir(GENERATOR_STAGE, key)
    pipeline_path = directory / "pipeline"
    if store.is_complete(GENERATOR_STAGE, key) and (pipeline_path / "model_index.json").is_file():
        summary = store.read_summary(GENERATOR_STAGE, key)
        digest = folder_sha256(pipeline_path)
        if digest != summary["pipeline_hash"]:
            raise DataError(f"{pipeline_path} changed since training (content hash {digest[:12]} != "
                            f"{summary['pipeline_hash'][:12]}); delete {directory} to retrain")
        identity = training_data_of(pipeline_path)
        check_disjoint(list(identity["sha256s"]), identity["manifest_hash"], split)
        return GeneratorOutput(key, directory, pipeline_path, digest, summary, cached=True, split_path=split_path)

    started = time.perf_counter()
    copy_start(plan.start, directory / "checkpoints")
    data = load_training_data(config, split, domain_cache_dir(config.runs_root, config.name), progress=progress)
    loss_log = LossLog(directory / "losses.json", config.generator.checkpoint_every)
    result = train_generator(config, data, directory, split.training_hash, progress=progress, on_step=loss_log)
    loss_log.save()
    if plan.start is not None and result.resumed_from is None:  # never a from-scratch run under a continued key
        raise DataError(f"the checkpoint of step {plan.start[1]} copied from the shorter run {plan.start[0]} did not "
                        f"load; delete {directory} and {store.domain_dir / GENERATOR_STAGE / plan.start[0]} to retrain")
    logged = [(int(step), float(value)) for step, value in loss_log.losses]
    digest = folder_sha256(result.model_path)
    per_class = {name: int((data.labels == i).sum()) for i, name in enumerate(class_names)}
    summary = {"pipeline_path": str(result.model_path), "pipeline_hash": digest, "steps": result.steps,
               "resumed_from": result.resumed_from,
               "parameters": result.parameters, "image_size": config.generator.image_size,
               "channels": config.channels, "mode": config.data.mode, "class_names": class_names,
               "train_images": int(len(data.labels)), "train_per_class": per_class,
               "manifest_hash": data.manifest_hash, "training_hash": split.training_hash,
               "final_loss": logged[-1][1] if logged else None,  # the whole run's log (a resumed run too)
               "mean_loss_last_50": (sum(v for _, v in logged[-50:]) / len(logged[-50:]) if logged else None),
               "train_seconds": round(result.seconds, 2), "images_per_second": round(result.images_per_second, 2),
               "ema_decay_reached": round(config.generator.ema_decay_at(result.steps), 6),
               "lineage": plan.lineage, "continued_from": plan.start[1] if plan.start else None,
               "continued_from_key": plan.start[0] if plan.start else None,
               "stage_seconds": round(time.perf_counter() - started, 2)}
    atomic_write_json(directory / "summary.json", summary)
    store.mark_complete(GENERATOR_STAGE, key, summary)
    store.latest_link(GENERATOR_STAGE, key)
    return GeneratorOutput(key, directory, result.model_path, digest, summary, split_path=split_path)


class LossLog:
    """The training loss per step in ``losses.json`` ([[step, loss], ...]) for the report's loss curve.

    Saved with every checkpoint, so a resumed run keeps the steps before its checkpoint and
    replaces the ones after it (which it trains again).
    """

    def __init__(self, path: Path, every: int) -> None:
        self.path, self.every = path, every
        self.losses: list[list[float]] = read_json(path) if path.is_file() else []

    def __call__(self, step: int, loss: float) -> None:
        if self.losses and self.losses[-1][0] >= step:
            self.losses = [entry for entry in self.losses if entry[0] < step]
        self.losses.append([step, loss])
        if step % self.every == 0:
            self.save()

    def save(self) -> None:
        atomic_write_json(self.path, self.losses)


def synthesis_key(config: DomainConfig, pipeline_hash: str, real_hash: str | None = None,
                  plan_hash: str | None = None, with_count: bool = True, reference_key: str | None = None) -> str:
    """``plan_hash``: the selection plan's content hash (synthesis.select); a different decision is a different set.
    ``with_count=False``: the key shared by sets that differ only in ``per_class`` (image i of class c is the
    same picture in all of them: its seed is ``image_seed(seed, c, i)``)."""
    s = config.synthesis
    payload = {"generator_hash": pipeline_hash, **s.sampler_settings(), "seed": config.seed}
    if s.mode != "noise":
        payload.update(mode=s.mode, strength=s.strength, real=real_hash)
    if plan_hash is not None:
        payload["plan"] = plan_hash
    if with_count:  # the counts follow from the multiple and the real sample (which the generator hash holds)
        payload.update({"per_class": s.per_class} if s.per_class_multiple is None else
                       {"per_class_multiple": s.per_class_multiple})
        if s.filter != "off":  # which images are kept (the images themselves are the series')
            payload.update(filter=s.filter, filter_max_factor=s.filter_max_factor, reference=reference_key)
    return hash_payload(payload)


def planned_synthesis_key(config: DomainConfig, generator: GeneratorOutput,
                          reference: ReferenceSource | None = None) -> str:
    """The synthesis stage's key computed without running anything (the flow's cache key).

    With ``synthesis.select`` it reads the selection plan of (generator, ``reference``, settings); before the
    plan exists it returns a key no finished set has, so nothing cached can stand in for a decision not yet made.
    """
    real_hash = None
    if generator.split_path is not None and config.synthesis.mode != "noise":
        real_hash = hash_payload(list(map(str, training_order(load_split(generator.split_path))["sha256"])))
    reference_key = _required(reference).key if config.synthesis.filter != "off" else None
    if not config.synthesis.select:
        return synthesis_key(config, generator.pipeline_hash, real_hash, reference_key=reference_key)
    from pipeline.generator.selection import plan_path, read_plan, selection_from_plan

    if generator.split_path is None:
        raise DataError("synthesis.select needs the generator's split (GeneratorOutput.split_path)")
    path = plan_path(config, generator, _required(reference).key)
    plan = read_plan(path)
    if plan is None:
        return hash_payload({"selection_pending": path.name})
    selection = selection_from_plan(plan, path, generator)
    return synthesis_key(selection.apply(config), selection.generator.pipeline_hash, real_hash, selection.plan_hash,
                         reference_key=reference_key)


def selection_stage(config: DomainConfig, generator: GeneratorOutput, reference: ReferenceSource | None,
                    progress: bool = True) -> Any:
    """The selection stage (``synthesis.select``): the plan of checkpoint, guidance and strength, decided once per
    (generator, reference, selection settings) and read back afterwards (pipeline.generator.selection)."""
    from pipeline.generator.selection import SELECTION_STAGE, plan_path, select_settings

    if generator.split_path is None:
        raise DataError("synthesis.select needs the generator's split (GeneratorOutput.split_path)")
    source = _required(reference)
    path = plan_path(config, generator, source.key)
    with RunStore(config.runs_root, config.name).lock(SELECTION_STAGE, path.parent.name):
        return select_settings(config, generator, real_sample(config, generator.split_path, progress), source,
                               progress=progress)


def _required(reference: ReferenceSource | None) -> ReferenceSource:
    if reference is None:
        raise ConfigError("synthesis.select needs the reference classifier (the real arm's fold models): run the "
                          "stages through `synth-augment run` / `synth-augment generator sample` or the Prefect flow, "
                          "which train it first, or set synthesis.select: false")
    return reference


def real_sample(config: DomainConfig, split_path: str | os.PathLike[str], progress: bool = False) -> RealSample:
    """The generator's training images (the split's TRAIN side) at the generator's resolution."""
    split = load_split(split_path)
    data = load_training_data(config, split, domain_cache_dir(config.runs_root, config.name), progress=progress)
    return RealSample(data.images, data.labels, data.sha256s)


def synthesis_stage(config: DomainConfig, generator: GeneratorOutput, progress: bool = True,
                    reference: ReferenceSource | None = None) -> SynthesisOutput:
    """Generate ``synthesis.per_class`` images for every class; a re-run fills in what is missing.

    ``per_class`` is part of the key; a new set starts from the images of a finished set that differs only
    in ``per_class`` (the same seeds give the same pictures), so raising it generates only the new ones. With ``synthesis.select`` the guidance scale, checkpoint
    and (real-seeded) strength are first chosen by pipeline.generator.selection (cached, every
    candidate's score recorded in the summary), judged by ``reference`` (the real arm's fold models; the
    wiring in flows/run.py passes the ``reference`` stage's output).
    """
    real = real_sample(config, generator.split_path, progress) if generator.split_path is not None else None
    selection = None
    if config.synthesis.select:
        from pipeline.generator.selection import select_settings

        if real is None:
            raise DataError("synthesis.select needs the generator's split (GeneratorOutput.split_path)")
        selection = select_settings(config, generator, real, _required(reference), progress=progress)
        config = selection.apply(config)
        generator = selection.generator
    inputs = (config, generator.pipeline_hash,
              hash_payload(real.sha256s) if real is not None and config.synthesis.mode != "noise" else None,
              selection.plan_hash if selection is not None else None)
    filtering = _required(reference) if config.synthesis.filter != "off" else None
    key = synthesis_key(*inputs, reference_key=filtering.key if filtering is not None else None)
    series = synthesis_key(*inputs, with_count=False)
    store = RunStore(config.runs_root, config.name)
    with store.lock(SYNTHESIS_STAGE, key):  # one writer per set: a second run waits, then reuses or extends it
        return _synthesize_or_reuse(config, generator, real, selection, key, series, store, progress, filtering)


def _start_from_sibling(store: RunStore, series: str, directory: Path, counts: list[int]) -> None:
    """Copy images 0..counts[c]-1 of each class c from the largest finished set of ``series`` into a new set's folder."""
    summaries = {m.parent: read_json(m) for m in store.domain_dir.glob(f"{SYNTHESIS_STAGE}/*/{COMPLETE_MARKER}")}
    finished = [(int(s.get("images") or s.get("per_class", 0)), folder) for folder, s in summaries.items()
                if s.get("series") == series and folder != directory and (folder / "manifest.parquet").is_file()]
    if not finished or any(directory.glob("images/*/*.png")):
        return
    source = max(finished, key=lambda item: item[0])[1]
    if not store.is_complete(SYNTHESIS_STAGE, source.name):  # its recorded images are still as written
        return
    manifest = read_table(source / "manifest.parquet")
    for c, label, i, rel in zip(manifest["class_index"], manifest["label"], manifest["index"], manifest["relpath"]):
        origin, target = source / str(rel), directory / str(rel)
        if int(i) < counts[int(c)] and str(rel) == image_relpath(int(c), str(label), int(i)) and origin.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_save_with(target, lambda tmp, origin=origin: shutil.copyfile(origin, tmp))


def _synthesize_or_reuse(config: DomainConfig, generator: GeneratorOutput, real: RealSample | None, selection: Any,
                         key: str, series: str, store: RunStore, progress: bool,
                         filtering: ReferenceSource | None = None) -> SynthesisOutput:
    directory = store.stage_dir(SYNTHESIS_STAGE, key)
    manifest_path = directory / "manifest.parquet"
    class_names = read_json(Path(generator.pipeline_path) / "model_index.json")["class_names"]
    counts = class_counts(config.synthesis, class_names, real)
    if store.is_complete(SYNTHESIS_STAGE, key) and manifest_path.is_file() and _current_layout(manifest_path):
        summary = store.read_summary(SYNTHESIS_STAGE, key)
        if _relisted_here(manifest_path):  # a copied or moved store: its own PNGs, never the original's
            store.mark_complete(SYNTHESIS_STAGE, key, summary)
        if summary.get("per_class_counts", [summary.get("per_class")] * len(counts)) == counts:
            if selection is not None:  # this run's choice (the stored set may come from a run without selection)
                summary = {**summary, "selection": selection.record}
            return SynthesisOutput(key, directory, manifest_path, summary, cached=True)
    (directory / COMPLETE_MARKER).unlink(missing_ok=True)  # not complete until this run's marker is written

    started = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if folder_sha256(generator.pipeline_path) != generator.pipeline_hash:
        raise DataError(f"{generator.pipeline_path} does not match its recorded hash; retrain the generator")
    pipe = load_pipeline(generator.pipeline_path, device)
    _start_from_sibling(store, series, directory, counts)
    before = len(list(directory.glob("images/*/*.png")))
    def generate(totals: list[int]) -> pd.DataFrame:
        return synthesize(pipe, directory, config.synthesis, config.seed, generator.pipeline_hash, progress,
                          real=real, counts=totals)

    filtered = None
    if filtering is None:
        manifest = generate(counts)
    else:
        filtered = filter_by_reference(generate, filtering.load(), counts, config.synthesis.filter_max_factor)
        manifest = filtered.manifest
        atomic_write_table(directory / FILTERED_FILE, filtered.dropped, csv_copy=False)
    atomic_write_table(manifest_path, manifest)
    syn = config.synthesis
    summary = {"per_class": syn.per_class, "per_class_counts": counts, "series": series, "classes": list(pipe.config.class_names), "images": int(len(manifest)),
               "generated_this_run": int(max(0, len(list(directory.glob("images/*/*.png"))) - before)),
               **syn.sampler_settings(), "synthesis_mode": syn.mode,
               "strength": syn.strength if syn.mode != "noise" else None,
               "generator_hash": generator.pipeline_hash, "generator": str(generator.pipeline_path),
               "mode": pipe.config.mode, "image_size": pipe.unet.config.sample_size,
               "nn_distance_median": _median(manifest["nn_distance"]),
               "seed_distance_median": _median(manifest["seed_distance"]),
               "selection": selection.record if selection is not None else None,
               "selection_plan": str(selection.plan_path) if selection is not None else None,
               "filter": filtered.per_class if filtered is not None else None,
               "seconds": round(time.perf_counter() - started, 2)}
    store.mark_complete(SYNTHESIS_STAGE, key, summary)
    store.latest_link(SYNTHESIS_STAGE, key)
    return SynthesisOutput(key, directory, manifest_path, summary)


def _current_layout(manifest_path: Path) -> bool:
    """A stored set written with this code's folder names (older sets put classes whose names differ only
    outside [A-Za-z0-9._-] into one folder): anything else is re-synthesised into the new folders."""
    manifest = read_table(manifest_path)
    expected = [image_relpath(int(c), str(label), int(i))
                for c, label, i in zip(manifest["class_index"], manifest["label"], manifest["index"])]
    if list(manifest["relpath"]) != expected:
        notice(f"{manifest_path} uses the old class folder names; re-synthesising into per-class folders")
        return False
    check_labels_distinct(manifest, manifest_path)
    return True


def _relisted_here(manifest_path: Path) -> bool:
    """Point a copied or moved store's manifest at its own images (verified against the recorded sha256);
    True when it was re-listed. A missing or changed image is a one-line error naming it."""
    manifest = read_table(manifest_path)
    here = [str((manifest_path.parent / rel).resolve()) for rel in manifest["relpath"]]
    if list(manifest["path"].astype(str)) == here:
        return False
    notice(f"{manifest_path} lists images of another store folder (copied or moved); re-listing this one's")
    for path, recorded in zip(here, manifest["sha256"].astype(str)):
        found = file_sha256(path) if Path(path).is_file() else None
        if found != recorded:
            what = "is missing" if found is None else f"differs from the image recorded (sha256 {found[:12]}, recorded {recorded[:12]})"
            raise DataError(f"{path} {what}; delete {manifest_path.parent} to synthesise the set again")
    atomic_write_table(manifest_path, manifest.assign(path=here))
    return True


def _median(values: Any) -> float | None:
    import pandas as pd

    numbers = pd.to_numeric(values, errors="coerce").dropna()
    return round(float(numbers.median()), 5) if len(numbers) else None
