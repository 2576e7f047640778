"""Selection without peeking: choose the checkpoint, the guidance scale and the real-seeded strength.

Every candidate generates ``synthesis.select_per_class`` images per class and is scored against the
real 20% training sample only (the held-out 80% is never loaded):

    score = CAS - gap
    CAS   classification accuracy score: mean per-class agreement of the reference classifier
          (pipeline.quality.reference, trained on the real sample only) with the intended labels;
          real-seeded images are judged out of fold (by the fold model that never saw their seed)
    gap   intensity gap (pipeline.quality.signals): mean |synthetic - real| of per-class mean, std and
          background level, pixels in [0, 1]

Candidates: the newest ``checkpoint_candidates`` training checkpoints (their EMA weights) x
``guidance_candidates``; then, for real-seeded synthesis, ``strength_candidates`` at the chosen
checkpoint and guidance. A candidate within ``select_tolerance`` of the best score counts as tied, and
ties go to the more diverse setting: lower guidance, then the newer checkpoint; higher strength.
Each candidate's score is cached (``runs/<domain>/selection/<generator>/``) and every score is
recorded in the synthesis summary, so a reader sees what was chosen against what.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.config import DomainConfig, hash_payload
from pipeline.generator.checkpoint import folder_sha256, list_checkpoints
from pipeline.generator.data import to_model_range
from pipeline.generator.pipeline import ClassConditionalPipeline
from pipeline.generator.sampling import export_pipeline, image_seed, load_pipeline, make_sampler
from pipeline.generator.stage import GeneratorOutput
from pipeline.generator.synthesis import RealSample, render
from pipeline.quality.reference import classification_accuracy_score, load_reference, reference_stage
from pipeline.quality.signals import class_statistics, intensity_gap
from pipeline.store import RunStore, atomic_write_json

SELECTION_STAGE = "selection"


@dataclass
class Selection:
    generator: GeneratorOutput  # the chosen checkpoint's export
    guidance_scale: float
    strength: float | None
    record: dict[str, Any]  # chosen settings, the reference's CV accuracy and every candidate's scores

    def apply(self, config: DomainConfig) -> DomainConfig:
        """The config with the chosen guidance (and strength) in place of the configured fallbacks."""
        changes: dict[str, Any] = {"guidance_scale": self.guidance_scale}
        if self.strength is not None:
            changes["strength"] = self.strength
        return config.model_copy(update={"synthesis": config.synthesis.model_copy(update=changes)})


def select_settings(config: DomainConfig, generator: GeneratorOutput, real: RealSample,
                    progress: bool = False) -> Selection:
    syn = config.synthesis
    assert generator.split_path is not None
    reference_out = reference_stage(config, generator.split_path, progress)
    reference = load_reference(reference_out.directory)
    class_names = list(reference.class_names)
    real_stats = class_statistics(real.images, real.labels, class_names)
    store = RunStore(config.runs_root, config.name)
    directory = store.stage_dir(SELECTION_STAGE, generator.pipeline_hash[:16])

    checkpoints = candidate_generators(config, generator, directory, syn.checkpoint_candidates)
    scored: list[dict[str, Any]] = []
    for step, output in checkpoints:
        for guidance in syn.guidance_candidates:
            scored.append(score_candidate(config, output, step, guidance, None, real, real_stats, reference,
                                          reference_out.key, directory))
    first = choose(scored, syn.select_tolerance, prefer=lambda c: (c["guidance_scale"], -c["checkpoint_step"]))
    chosen_output = dict(checkpoints)[first["checkpoint_step"]]
    strength = None
    strength_scores: list[dict[str, Any]] = []
    if syn.mode == "real-seeded":
        for value in syn.strength_candidates:
            strength_scores.append(score_candidate(config, chosen_output, first["checkpoint_step"],
                                                   first["guidance_scale"], value, real, real_stats, reference,
                                                   reference_out.key, directory))
        strength = choose(strength_scores, syn.select_tolerance, prefer=lambda c: -c["strength"])["strength"]
    record = {"checkpoint_step": first["checkpoint_step"], "guidance_scale": first["guidance_scale"],
              "strength": strength, "reference_cv_accuracy": reference_out.summary["cv_accuracy"],
              "reference_key": reference_out.key, "tolerance": syn.select_tolerance,
              "candidates": scored + strength_scores}
    atomic_write_json(directory / f"choice-{hash_payload(record)}.json", record)
    return Selection(chosen_output, first["guidance_scale"], strength, record)


def choose(candidates: list[dict[str, Any]], tolerance: float, prefer: Any) -> dict[str, Any]:
    best = max(c["score"] for c in candidates)
    tied = [c for c in candidates if c["score"] >= best - tolerance]
    return sorted(tied, key=prefer)[0]


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
                           identity["mode"], syn.steps, syn.guidance_scale, identity)


def score_candidate(config: DomainConfig, output: GeneratorOutput, step: int, guidance: float,
                    strength: float | None, real: RealSample, real_stats: Any, reference: Any, reference_key: str,
                    directory: Path) -> dict[str, Any]:
    """Generate the candidate's images and score them; cached by (generator, settings, reference)."""
    syn = config.synthesis.model_copy(update={"guidance_scale": guidance,
                                              "mode": "real-seeded" if strength is not None else "noise",
                                              **({"strength": strength} if strength is not None else {})})
    key = hash_payload({"generator": output.pipeline_hash, "sampler": syn.sampler_settings(), "strength": strength,
                        "per_class": syn.select_per_class, "seed": config.seed, "reference": reference_key,
                        "real": hash_payload(real.sha256s), "version": 1})
    cached = directory / f"candidate-{key}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    pipe = load_pipeline(output.pipeline_path)
    images, labels, seeds = candidate_images(pipe, syn, config.seed, real, strength)
    stats = class_statistics(images, torch.tensor(labels), list(pipe.config.class_names))
    gap = intensity_gap(stats, real_stats)
    cas = classification_accuracy_score(reference, images, labels, seeds)
    result = {"checkpoint_step": step, "guidance_scale": guidance, "strength": strength,
              "score": round(cas["cas"] - gap["gap"], 5), "cas": round(cas["cas"], 5), "gap": round(gap["gap"], 5),
              "cas_per_class": cas["per_class"], "confusion": cas["confusion"],
              "gap_per_class": {k: round(v["gap"], 5) for k, v in gap["per_class"].items()},
              "images": len(labels)}
    atomic_write_json(cached, result)
    return result


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
