"""Selection without peeking: choose the checkpoint, the guidance scale and the real-seeded strength, once.

Every candidate generates ``synthesis.select_per_class`` images per class and is scored against the
real 20% training sample only (the held-out 80% is never loaded); pipeline.generator.select_score says
what the score is and how its standard error is estimated:

    score = CAS - gap + synthesis.select_diversity_weight * novelty

Candidates: the newest ``checkpoint_candidates`` training checkpoints (their EMA weights) x
``guidance_candidates``; then, for real-seeded synthesis, ``strength_candidates`` at the chosen
checkpoint and guidance. Candidates whose scores differ by less than max(``select_tolerance``, the SE of
the difference) are tied, and ties go to the more diverse setting: lower guidance, then the newer
checkpoint; higher strength. When the images per candidate are too few for the SE to be under the
tolerance, the plan and the log say so and how many would be needed.

The decision is written once as a plan (``runs/<domain>/selection/<key>/plan.json``, the key hashing the
generator, the reference classifier and every selection setting; the flow runs it as its own stage): the chosen checkpoint,
guidance and strength, every candidate's score with its SE and components, the image counts, and the
chosen generator exported again as a pipeline folder whose ``__call__`` defaults are the chosen guidance
(and strength). A later run reads the plan instead of deciding again; the synthesis key includes the
plan's content hash (``plan_hash``), so a different decision is a different synthetic set.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.config import DomainConfig, hash_payload
from pipeline.generator.checkpoint import folder_sha256, list_checkpoints
from pipeline.generator.data import to_model_range
from pipeline.generator.pipeline import ClassConditionalPipeline
from pipeline.generator.sampling import export_pipeline, image_seed, load_pipeline, make_sampler
from pipeline.generator.select_score import (choose, images_needed, per_image_components, real_class_statistics,
                                             real_spacing, score_with_se)
from pipeline.generator.outputs import GeneratorOutput
from pipeline.generator.synthesis import RealSample, render
from pipeline.progress import Progress
from pipeline.quality.judge import ReferenceSource
from pipeline.store import RunStore, atomic_folder, atomic_write_json, read_json

SELECTION_STAGE = "selection"
PLAN_SCHEMA = 1
log = logging.getLogger(__name__)


@dataclass
class Selection:
    generator: GeneratorOutput  # the chosen checkpoint, exported with the chosen guidance/strength as defaults
    guidance_scale: float
    strength: float | None
    record: dict[str, Any]  # the plan: chosen settings, the reference's CV accuracy, every candidate's score
    plan_path: Path | None = None
    plan_hash: str | None = None
    cached: bool = False  # read from a finished plan (True) or decided by this call

    @property
    def key(self) -> str:
        """The selection stage's key: the plan's folder name (``plan_key``)."""
        return self.plan_path.parent.name if self.plan_path is not None else ""

    def apply(self, config: DomainConfig) -> DomainConfig:
        """The config with the chosen guidance (and strength) in place of the configured fallbacks."""
        changes: dict[str, Any] = {"guidance_scale": self.guidance_scale}
        if self.strength is not None:
            changes["strength"] = self.strength
        return config.model_copy(update={"synthesis": config.synthesis.model_copy(update=changes)})


def selection_settings(config: DomainConfig) -> dict[str, Any]:
    """Every setting that can change the decision (the plan's key hashes these)."""
    syn = config.synthesis
    return {"sampler": syn.sampler_settings(), "mode": syn.mode, "guidance_candidates": list(syn.guidance_candidates),
            "strength_candidates": list(syn.strength_candidates) if syn.mode == "real-seeded" else None,
            "checkpoint_candidates": syn.checkpoint_candidates, "per_class": syn.select_per_class,
            "tolerance": syn.select_tolerance, "diversity_weight": syn.select_diversity_weight, "seed": config.seed}


def plan_key(config: DomainConfig, generator: GeneratorOutput, reference_key: str) -> str:
    """The selection stage's key: the generator, the reference classifier and every selection setting."""
    return hash_payload({"generator": generator.pipeline_hash, "reference": reference_key,
                         "settings": selection_settings(config), "schema": PLAN_SCHEMA})


def plan_path(config: DomainConfig, generator: GeneratorOutput, reference_key: str) -> Path:
    """Where the plan lives (``selection/<plan key>/plan.json``, the chosen pipeline beside it); computed without
    running."""
    key = plan_key(config, generator, reference_key)
    return RunStore(config.runs_root, config.name).stage_dir(SELECTION_STAGE, key) / "plan.json"


def candidates_dir(config: DomainConfig, generator: GeneratorOutput) -> Path:
    """Candidate scores and exported checkpoints of one generator, shared by every plan made from it (a plan
    with another tolerance rescores nothing)."""
    store = RunStore(config.runs_root, config.name)
    return store.domain_dir / SELECTION_STAGE / "candidates" / generator.pipeline_hash[:16]


def plan_hash(plan: dict[str, Any]) -> str:
    """Content hash of a plan (its folder path left out: the same decision in another store hashes the same)."""
    return hash_payload({k: v for k, v in plan.items() if k != "pipeline"})


def read_plan(path: Path) -> dict[str, Any] | None:
    """A finished plan whose exported pipeline is still there, unchanged; None otherwise."""
    if not path.is_file():
        return None
    plan = read_json(path)
    folder = chosen_folder(plan, path)
    if not (folder / "model_index.json").is_file() or folder_sha256(folder) != plan.get("pipeline_hash"):
        return None
    return plan


def chosen_folder(plan: dict[str, Any], path: Path) -> Path:
    """The chosen pipeline's folder: beside the plan file, wherever the store now is (a plan written before
    issue 19 holds an absolute path; only its name is used, so a copied store never reads the original's)."""
    return path.parent / Path(str(plan.get("pipeline", ""))).name


def selection_from_plan(plan: dict[str, Any], path: Path, generator: GeneratorOutput, cached: bool = True) -> Selection:
    chosen = dataclasses.replace(generator, pipeline_path=chosen_folder(plan, path), pipeline_hash=plan["pipeline_hash"],
                                 cached=True)
    return Selection(chosen, float(plan["guidance_scale"]), plan["strength"], plan, path, plan_hash(plan), cached)


def select_settings(config: DomainConfig, generator: GeneratorOutput, real: RealSample, reference_source: ReferenceSource,
                    progress: bool = False) -> Selection:
    """Read the plan of (generator, reference, settings), or score every candidate and write it."""
    syn = config.synthesis
    path = plan_path(config, generator, reference_source.key)
    existing = read_plan(path)
    if existing is not None:
        return selection_from_plan(existing, path, generator)
    reference = reference_source.load()
    class_names = list(reference.class_names)
    context = {"real": real, "real_stats": real_class_statistics(real, len(class_names)),
               "spacing": real_spacing(real), "reference": reference, "reference_key": reference_source.key}
    directory = candidates_dir(config, generator)
    directory.mkdir(parents=True, exist_ok=True)

    checkpoints = candidate_generators(config, generator, directory, syn.checkpoint_candidates)
    scored: list[dict[str, Any]] = []
    seeded = syn.strength_candidates if syn.mode == "real-seeded" else []
    report = Progress("selection", len(checkpoints) * len(syn.guidance_candidates) + len(seeded), unit="candidate")
    for step, output in checkpoints:
        for guidance in syn.guidance_candidates:
            scored.append(score_candidate(config, output, step, guidance, None, context, directory))
            report.update(report.done + 1)
    first, scored = choose(scored, syn.select_tolerance,
                           prefer=lambda c: (c["guidance_scale"], -c["checkpoint_step"]))
    chosen_output = dict(checkpoints)[first["checkpoint_step"]]
    strength = None
    strength_scores: list[dict[str, Any]] = []
    if syn.mode == "real-seeded":
        for value in syn.strength_candidates:
            strength_scores.append(score_candidate(config, chosen_output, first["checkpoint_step"],
                                                   first["guidance_scale"], value, context, directory))
            report.update(report.done + 1)
        picked, strength_scores = choose(strength_scores, syn.select_tolerance, prefer=lambda c: -c["strength"])
        strength = picked["strength"]
    candidates = scored + strength_scores
    warnings = precision_warnings(candidates, syn.select_tolerance, syn.select_per_class)
    for message in warnings:
        log.warning(message)
    target = path.parent / "chosen"
    export_with_defaults(chosen_output.pipeline_path, target, first["guidance_scale"], strength)
    plan = {"schema": PLAN_SCHEMA, "checkpoint_step": first["checkpoint_step"],
            "guidance_scale": first["guidance_scale"], "strength": strength,
            "generator_hash": generator.pipeline_hash, "chosen_checkpoint_hash": chosen_output.pipeline_hash,
            "pipeline": target.name, "pipeline_hash": folder_sha256(target),
            "reference_cv_accuracy": reference.cv_accuracy, "reference_key": reference_source.key,
            "tolerance": syn.select_tolerance, "diversity_weight": syn.select_diversity_weight,
            "score": "CAS - gap + diversity_weight * novelty (pipeline.generator.select_score)",
            "images_per_class": syn.select_per_class, "classes": len(class_names),
            "images_per_candidate": syn.select_per_class * len(class_names),
            "images_per_class_needed": images_needed(candidates, syn.select_tolerance),
            "warnings": warnings, "candidates": candidates}
    atomic_write_json(path, plan)
    RunStore(config.runs_root, config.name).mark_complete(SELECTION_STAGE, path.parent.name,
                                                          {"plan_hash": plan_hash(plan)})
    return selection_from_plan(plan, path, generator, cached=False)


def precision_warnings(candidates: list[dict[str, Any]], tolerance: float, per_class: int) -> list[str]:
    """A warning when a candidate's SE is above the tolerance: the choice then rests on the SE margin."""
    needed = images_needed(candidates, tolerance)
    if needed is None:
        return []
    worst = max(c["se"] for c in candidates)
    return [f"selection: the score's standard error (up to {worst:.3f} with {per_class} images per class and "
            f"candidate) is above synthesis.select_tolerance = {tolerance}; candidates within their SE of the best "
            f"are treated as ties. About {needed} images per class (synthesis.select_per_class) would bring the SE "
            f"under the tolerance."]


def export_with_defaults(source: Path, target: Path, guidance_scale: float, strength: float | None) -> Path:
    """A copy of the pipeline folder ``source`` whose ``__call__`` defaults are the chosen guidance (and strength),
    written aside and swapped into place (never a moment without a whole folder)."""
    with atomic_folder(target) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        index = json.loads((tmp / "model_index.json").read_text())
        index["guidance_scale"] = float(guidance_scale)
        if strength is not None:
            index["strength"] = float(strength)
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return target


def candidate_generators(config: DomainConfig, generator: GeneratorOutput, directory: Path,
                         count: int) -> list[tuple[int, GeneratorOutput]]:
    """(step, output) of the newest ``count`` checkpoints; the final one is the generator itself."""
    final = int(generator.summary["steps"])
    found = [(step, path) for step, path in list_checkpoints(generator.directory / "checkpoints") if step != final]
    out = [(final, generator)]
    for step, path in reversed(found[-(count - 1):] if count > 1 else []):
        target = directory / f"pipeline-{step:08d}"
        if not (target / "model_index.json").is_file():
            export_checkpoint_ema(config, path, target)
        out.append((step, dataclasses.replace(generator, pipeline_path=target, pipeline_hash=folder_sha256(target),
                                              cached=True)))
    return out


def export_checkpoint_ema(config: DomainConfig, checkpoint: Path, target: Path) -> Path:
    """A training checkpoint's EMA weights as a pipeline folder (the format of the generator's export)."""
    from diffusers import UNet2DModel

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    kwargs = json.loads(state["unet_config"])
    model = UNet2DModel(**kwargs)
    with torch.no_grad():
        for param, shadow in zip(model.parameters(), state["ema"]["shadow_params"]):
            param.copy_(shadow)
    g, syn, identity = state["generator_config"], config.synthesis, dict(state["data"])
    noise = {"num_train_timesteps": g["num_train_timesteps"], "beta_schedule": g["beta_schedule"],
             "prediction_type": g["prediction_type"]}
    return export_pipeline(target, kwargs, {k: v.detach().float().cpu() for k, v in model.state_dict().items()},
                           make_sampler(syn.sampler, noise, syn.steps, syn), identity["class_names"],
                           identity["mode"], syn.steps, syn.guidance_scale, identity, syn.sampling_options(),
                           guide_state=_guide_of(checkpoint.parent, g))


def _guide_of(ckpt_dir: Path, generator_config: dict[str, Any]) -> dict[str, torch.Tensor] | None:
    """The autoguidance guide a candidate checkpoint's run kept (its generator.guide_step), if any."""
    from pipeline.generator.checkpoint import load_guide

    step = generator_config.get("guide_step")
    return load_guide(ckpt_dir, int(step)) if step else None


def score_candidate(config: DomainConfig, output: GeneratorOutput, step: int, guidance: float,
                    strength: float | None, context: dict[str, Any], directory: Path) -> dict[str, Any]:
    """Generate the candidate's images and score them; cached by (generator, settings, reference)."""
    syn = config.synthesis.model_copy(update={"guidance_scale": guidance,
                                              "mode": "real-seeded" if strength is not None else "noise",
                                              **({"strength": strength} if strength is not None else {})})
    real: RealSample = context["real"]
    key = hash_payload({"generator": output.pipeline_hash, "sampler": syn.sampler_settings(), "strength": strength,
                        "per_class": syn.select_per_class, "seed": config.seed, "reference": context["reference_key"],
                        "real": hash_payload(real.sha256s), "weight": syn.select_diversity_weight, "version": 2})
    cached = directory / f"candidate-{key}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    pipe = load_pipeline(output.pipeline_path)
    images, labels, seeds = candidate_images(pipe, syn, config.seed, real, strength)
    result = {"checkpoint_step": step, "guidance_scale": guidance, "strength": strength,
              **score_images(images, labels, seeds, context, syn.select_diversity_weight, config.seed)}
    atomic_write_json(cached, result)
    return result


def score_images(images: torch.Tensor, labels: list[int], seeds: list[str | None] | None, context: dict[str, Any],
                 weight: float, seed: int) -> dict[str, Any]:
    """Score, SE and components of one candidate's images (``context``: real, real_stats, spacing, reference)."""
    reference = context["reference"]
    probs = (reference.out_of_fold_proba(images, seeds) if seeds is not None else reference.predict_proba(images))
    predicted = np.asarray(probs).argmax(1)
    parts = per_image_components(images, labels, predicted == np.asarray(labels), context["real"], context["spacing"])
    k = len(reference.class_names)
    confusion = np.zeros((k, k), dtype=int)
    for true, pred in zip(labels, predicted):
        confusion[true, pred] += 1
    per_class = {name: round(float(confusion[i, i] / confusion[i].sum()), 5)
                 for i, name in enumerate(reference.class_names) if confusion[i].sum() > 0}
    return {**score_with_se(parts, context["real_stats"], weight, seed), "cas_per_class": per_class,
            "confusion": confusion.tolist(), "images": len(labels)}


def candidate_images(pipe: ClassConditionalPipeline, syn: Any, seed: int, real: RealSample,
                     strength: float | None) -> tuple[torch.Tensor, list[int], list[str | None] | None]:
    """uint8 images, labels and (real-seeded) seed hashes of one candidate; seeds differ from synthesis's."""
    chunk = [(c, i) for c in range(len(pipe.config.class_names)) for i in range(syn.select_per_class)]
    labels = [c for c, _ in chunk]
    seeds = [image_seed(seed + 1, c, i) for c, i in chunk]
    out, seed_shas = [], None
    if strength is not None:
        rows = [real.seed_of(c, i * 7 + 3) for c, i in chunk]  # spread over the class's images
        seed_shas = [real.sha256s[r] for r in rows]
    for k in range(0, len(chunk), syn.batch_size):
        part = slice(k, k + syn.batch_size)
        if strength is None:
            out.append(render(pipe, labels[part], seeds[part], syn))
        else:
            init = to_model_range(real.images[rows[part]])
            out.append(render(pipe, labels[part], seeds[part], syn, init=init, strength=strength))
    return torch.cat(out), labels, seed_shas
