"""Our guided sampling loop: classifier-free guidance over any of four diffusers samplers.

diffusers has no class-conditional pipeline, so the loop is written out here::

    x_T ~ N(0, I)                                   one generator per image: classes never share noise
    for t in scheduler.timesteps:
        eps_c = unet(x_t, t, label)                 conditional prediction
        eps_u = unet(x_t, t, null label)            unconditional prediction (same batch, doubled)
        eps   = eps_u + w * (eps_c - eps_u)          w = guidance scale; w = 1 skips eps_u entirely
        x_t   = scheduler.step(eps, t, x_t)

Samplers: SDE-DPM-Solver++ (2nd order, stochastic: the default, ~20-50 steps), DPM-Solver++
(deterministic, same cost), DDIM (deterministic, ~50 steps) and DDPM (ancestral, up to the full
1000 training steps).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel
from diffusers.utils.torch_utils import randn_tensor

from pipeline.config import SAMPLERS
from pipeline.errors import ConfigError


STOCHASTIC_SAMPLERS = frozenset({"ddpm", "sde-dpmsolver++"})  # they draw fresh noise every step


@dataclass
class LoadedGenerator:
    """An exported generator: EMA weights in eval mode plus what sampling needs to know."""

    model: UNet2DModel
    class_names: list[str]
    channels: int
    mode: str
    image_size: int
    noise: dict[str, Any]  # num_train_timesteps, beta_schedule, prediction_type
    data: dict[str, Any]  # training-data identity (manifest hash, content hashes, split hash)

    @property
    def null_label(self) -> int:
        return len(self.class_names)


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> LoadedGenerator:
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = UNet2DModel(**json.loads(state["unet_config"]))
    model.load_state_dict(state["state_dict"])
    model.to(device).eval()
    data = state["data"]
    return LoadedGenerator(model, list(data["class_names"]), int(data["channels"]), str(data["mode"]),
                           int(state["image_size"]), dict(state["noise"]), dict(data))


def make_sampler(name: str, noise: dict[str, Any], steps: int) -> Any:
    """A diffusers scheduler for ``name`` on the training noise schedule, with ``steps`` timesteps set."""
    common = {"num_train_timesteps": noise["num_train_timesteps"], "beta_schedule": noise["beta_schedule"],
              "prediction_type": noise["prediction_type"]}
    if name in ("dpmsolver++", "sde-dpmsolver++"):
        # lambda_min_clipped: with the cosine schedule alpha_bar(T) is ~0, and without the clip the solver's
        # first data prediction x0 = (x - sigma * eps) / alpha explodes (pure salt-and-pepper images).
        # thresholding with max 1.0 clips each x0 prediction to the data range, as DDIM's clip_sample does.
        # sde-dpmsolver++ (the default) re-injects fresh noise each step like DDPM: on an undertrained model
        # (every CPU budget) the deterministic solvers leave grainy residual noise that it washes out, at
        # the same cost per step (measured on the demo generator: clean at 20 steps, grainy with dpmsolver++).
        scheduler = DPMSolverMultistepScheduler(**common, algorithm_type=name, solver_order=2,
                                                lambda_min_clipped=-5.1, thresholding=True, sample_max_value=1.0)
    elif name == "ddim":
        scheduler = DDIMScheduler(**common, clip_sample=True)
    elif name == "ddpm":
        scheduler = DDPMScheduler(**common, clip_sample=True)
    else:
        raise ConfigError(f"synthesis.sampler = {name!r} is invalid; expected one of {', '.join(SAMPLERS)}")
    if steps < 1 or steps > noise["num_train_timesteps"]:
        raise ConfigError(f"synthesis.steps = {steps} is invalid; expected 1..{noise['num_train_timesteps']}")
    scheduler.set_timesteps(steps)
    return scheduler


def image_seed(seed: int, class_index: int, image_index: int) -> int:
    """The noise seed of image ``image_index`` of class ``class_index``: distinct for every (class, image)."""
    return (seed * 1_000_003 + class_index * 10_000_019 + image_index) % 2**63


@torch.no_grad()
def sample(generator: LoadedGenerator, labels: list[int], seeds: list[int], sampler: str = "dpmsolver++",
           steps: int = 20, guidance_scale: float = 2.0) -> torch.Tensor:
    """Generate one image per (label, seed): float tensor in [-1, 1], shape (N, C, H, W), on the CPU."""
    if len(labels) != len(seeds):
        raise ValueError(f"labels ({len(labels)}) and seeds ({len(seeds)}) differ in length")
    if guidance_scale < 0:
        raise ConfigError(f"synthesis.guidance_scale = {guidance_scale} is invalid; expected a number >= 0")
    bad = [lab for lab in labels if not 0 <= lab < len(generator.class_names)]
    if bad:
        raise ValueError(f"labels {bad[:5]} are outside 0..{len(generator.class_names) - 1}")
    model = generator.model
    device = next(model.parameters()).device
    scheduler = make_sampler(sampler, generator.noise, steps)
    rngs = [torch.Generator().manual_seed(s) for s in seeds]
    shape = (len(labels), generator.channels, generator.image_size, generator.image_size)
    x = randn_tensor(shape, generator=rngs, dtype=torch.float32).to(device) * scheduler.init_noise_sigma
    cond = torch.tensor(labels, dtype=torch.long, device=device)
    guided = guidance_scale != 1.0
    both = torch.cat([cond, torch.full_like(cond, generator.null_label)]) if guided else cond
    for t in scheduler.timesteps:
        model_in = scheduler.scale_model_input(x, t)
        if guided:
            out = model(torch.cat([model_in, model_in]), t, class_labels=both).sample
            out_cond, out_uncond = out.chunk(2)
            out = out_uncond + guidance_scale * (out_cond - out_uncond)
        else:
            out = model(model_in, t, class_labels=cond).sample
        # stochastic samplers add fresh noise every step: drawn from the per-image generators, so still seeded per image
        kwargs = {"generator": rngs} if sampler in STOCHASTIC_SAMPLERS else {}
        x = scheduler.step(out, t, x, **kwargs).prev_sample
    return x.clamp(-1, 1).float().cpu()
