"""Samplers and the exported generator: the one place schedulers are built, and the export/load of the pipeline.

    make_sampler(name, noise, steps)      a diffusers scheduler on the training noise schedule
    export_pipeline(directory, ...)       save_pretrained of the EMA UNet + scheduler + class names
    load_pipeline(path, device)           ClassConditionalPipeline.from_pretrained
    use_sampler(pipe, name, steps)        swap another sampler in (same noise schedule)
    image_seed(seed, class, index)        the noise seed of one synthetic image

The guided denoising loop itself is ``ClassConditionalPipeline.__call__`` (pipeline.py).

Samplers: SDE-DPM-Solver++ (2nd order, stochastic: the default, ~20-50 steps), DPM-Solver++
(deterministic, same cost), DDIM (deterministic, ~50 steps) and DDPM (ancestral, up to the full
1000 training steps).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel

from pipeline.config import SAMPLERS, X0_CLIPS, SynthesisConfig
from pipeline.errors import ConfigError
from pipeline.generator import pipeline as pipeline_module
from pipeline.generator.pipeline import ClassConditionalPipeline
from pipeline.store import atomic_folder

PORTABLE_SOURCE = "pipeline.py"  # diffusers loads it with custom_pipeline="pipeline", trust_remote_code=True
PORTABLE_CARD = """# Class-conditional diffusion generator (synth-augment)

Classes: {classes}. Needs only torch and diffusers:

```python
from diffusers import DiffusionPipeline

pipe = DiffusionPipeline.from_pretrained("path/to/this/folder", custom_pipeline="pipeline",
                                         trust_remote_code=True)
images = pipe(class_labels=["{first}"] * 4).images   # PIL images; class indices work too
```

`pipeline.py` is the pipeline's source (its `__call__` is the guided sampling loop); `unet/` and
`scheduler/` are standard diffusers folders; `training_data.json` lists the sha256 of every training
image (the generator never saw any other).
"""
TRAINING_DATA_FILE = "training_data.json"  # beside model_index.json: the training images' content hashes


def noise_schedule(scheduler_config: Any) -> dict[str, Any]:
    """The training noise schedule (what every sampler must share) from a scheduler's config."""
    return {"num_train_timesteps": int(scheduler_config.num_train_timesteps),
            "beta_schedule": str(scheduler_config.beta_schedule),
            "prediction_type": str(scheduler_config.prediction_type)}


def make_sampler(name: str, noise: dict[str, Any], steps: int,
                 settings: SynthesisConfig | dict[str, Any] | None = None) -> Any:
    """A diffusers scheduler for ``name`` on the training noise schedule, with ``steps`` timesteps set.

    ``settings`` (a SynthesisConfig or its ``sampler_settings()``; default: SynthesisConfig's defaults)
    supplies everything else: x0 clipping, timestep spacing, solver order, the lambda clip, DDIM's eta.
    This is the one place schedulers are built: ``synthesis``, ``generator sample`` and ``generator grid``
    all come through here with the same settings.
    """
    opts = {**_settings(settings), "prediction_type": noise["prediction_type"]}
    common = {"num_train_timesteps": noise["num_train_timesteps"], "beta_schedule": noise["beta_schedule"],
              "prediction_type": noise["prediction_type"], "timestep_spacing": opts["timestep_spacing"],
              **_x0_clip_kwargs(name, opts)}
    if name in ("dpmsolver++", "sde-dpmsolver++"):
        # lambda_min_clipped: with the cosine schedule alpha_bar(T) is ~0, and without the clip the solver's
        # first data prediction x0 = (x - sigma * eps) / alpha explodes (pure salt-and-pepper images).
        # sde-dpmsolver++ (the default) re-injects fresh noise each step like DDPM: on an undertrained model
        # (every CPU budget) the deterministic solvers leave grainy residual noise that it washes out, at
        # the same cost per step (measured on the demo generator: clean at 20 steps, grainy with dpmsolver++).
        scheduler = DPMSolverMultistepScheduler(**common, algorithm_type=name, solver_order=opts["solver_order"],
                                                lambda_min_clipped=opts["lambda_min_clipped"])
    elif name == "ddim":
        scheduler = DDIMScheduler(**common)
    elif name == "ddpm":
        scheduler = DDPMScheduler(**common)
    else:
        raise ConfigError(f"synthesis.sampler = {name!r} is invalid; expected one of {', '.join(SAMPLERS)}")
    if steps < 1 or steps > noise["num_train_timesteps"]:
        raise ConfigError(f"synthesis.steps = {steps} is invalid; expected 1..{noise['num_train_timesteps']}")
    scheduler.set_timesteps(steps)
    return scheduler


def _settings(settings: SynthesisConfig | dict[str, Any] | None) -> dict[str, Any]:
    defaults = SynthesisConfig().sampler_settings()
    if settings is None:
        return defaults
    if isinstance(settings, SynthesisConfig):
        return settings.sampler_settings()
    return {**defaults, **settings}


def _x0_clip_kwargs(name: str, opts: dict[str, Any]) -> dict[str, Any]:
    """Scheduler arguments for synthesis.x0_clip: off, a hard clip to [-1, 1], or dynamic thresholding."""
    mode = opts["x0_clip"]
    if mode not in X0_CLIPS:
        raise ConfigError(f"synthesis.x0_clip = {mode!r} is invalid; expected one of {', '.join(X0_CLIPS)}")
    if mode == "auto":  # measured: v-prediction is best unclipped, epsilon needs the clip (see SynthesisConfig)
        mode = "off" if opts.get("prediction_type") == "v_prediction" else "clip"
    if mode == "dynamic":
        return {"thresholding": True, "dynamic_thresholding_ratio": opts["dynamic_threshold_ratio"],
                "sample_max_value": opts["dynamic_threshold_max"],
                **({} if name.startswith(("dpm", "sde")) else {"clip_sample": False})}
    if name in ("ddim", "ddpm"):
        return {"clip_sample": mode == "clip", "clip_sample_range": 1.0, "thresholding": False}
    # DPM-Solver++ has no clip_sample: thresholding with a maximum of 1 is a hard clip to [-1, 1]
    return {"thresholding": mode == "clip", "sample_max_value": 1.0}


def image_seed(seed: int, class_index: int, image_index: int) -> int:
    """The noise seed of image ``image_index`` of class ``class_index``: distinct for every (class, image)."""
    return (seed * 1_000_003 + class_index * 10_000_019 + image_index) % 2**63


def export_pipeline(directory: str | os.PathLike[str], unet_kwargs: dict[str, Any],
                    state_dict: dict[str, torch.Tensor], scheduler: Any, class_names: list[str], mode: str,
                    num_inference_steps: int, guidance_scale: float, training_data: dict[str, Any],
                    sampling_options: dict[str, Any] | None = None,
                    guide_state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the generator as a diffusers pipeline folder (``save_pretrained``), atomically.

    ``unet/`` holds the EMA weights as safetensors and the UNet config, ``scheduler/`` the full
    scheduler config, ``model_index.json`` the class names, mode, sampling defaults and the
    training-data identity; ``training_data.json`` lists every training image's sha256.
    """
    directory = Path(directory)
    unet = UNet2DModel(**unet_kwargs)
    unet.load_state_dict(state_dict)
    sha256s = list(training_data.get("sha256s", []))
    identity = {k: v for k, v in training_data.items() if k not in ("sha256s", "class_names", "mode", "channels")}
    identity["images"] = len(sha256s)
    guide = None
    if guide_state is not None:  # the autoguidance guide: the same UNet at an earlier step
        guide = UNet2DModel(**unet_kwargs)
        guide.load_state_dict(guide_state)
        guide.eval()
    pipe = ClassConditionalPipeline(unet.eval(), scheduler, class_names=list(class_names), mode=mode,
                                    num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                                    training_data=identity, sampling_options=sampling_options or None,
                                    guide_unet=guide)
    with atomic_folder(directory) as tmp:  # written aside, swapped in: never a moment without a whole folder
        pipe.save_pretrained(tmp, safe_serialization=True)
        (tmp / TRAINING_DATA_FILE).write_text(json.dumps({**identity, "sha256s": sha256s}, indent=1))
        write_portable_files(tmp, class_names)
    return directory


def write_portable_files(folder: Path, class_names: list[str]) -> None:
    """The pipeline's own source beside its weights (diffusers' way to ship a custom pipeline), and a card
    that says how to load it, so the folder works on a machine without synth-augment."""
    shutil.copyfile(pipeline_module.__file__, folder / PORTABLE_SOURCE)
    (folder / "README.md").write_text(PORTABLE_CARD.format(classes=", ".join(map(str, class_names)),
                                                                           first=str(class_names[0])),
                                      encoding="utf-8")


def load_pipeline(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> ClassConditionalPipeline:
    """An exported generator on ``device``, quiet (no progress bar per call)."""
    pipe = ClassConditionalPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def use_sampler(pipe: ClassConditionalPipeline, name: str, steps: int,
                settings: SynthesisConfig | dict[str, Any] | None = None) -> ClassConditionalPipeline:
    """Swap in the ``name`` sampler (with ``settings``) on the pipeline's own training noise schedule."""
    pipe.scheduler = make_sampler(name, noise_schedule(pipe.scheduler.config), steps, settings)
    return pipe


def training_data_of(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The training-data identity an exported generator carries (with every training image's sha256)."""
    return json.loads((Path(path) / TRAINING_DATA_FILE).read_text())
