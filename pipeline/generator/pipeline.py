"""The trained generator as a diffusers pipeline: a class-conditional UNet, a scheduler, class names.

Use it like any diffusers pipeline, outside this project (needs only torch + diffusers)::

    from pipeline.generator.pipeline import ClassConditionalPipeline

    pipe = ClassConditionalPipeline.from_pretrained("runs/brain-mri/generator/<key>/pipeline")
    images = pipe(class_labels=["glioma"] * 8).images          # PIL images in the domain's mode

The sampling loop is classifier-free guidance, written out in ``__call__``::

    x_T ~ N(0, I)                                   one generator per image: classes never share noise
    for t in scheduler.timesteps:
        eps_c = unet(x_t, t, label)                 conditional prediction
        eps_u = unet(x_t, t, null label)            unconditional prediction (same batch, doubled)
        eps   = eps_u + w * (eps_c - eps_u)          w = guidance scale; w = 1 skips eps_u entirely
        x_t   = scheduler.step(eps, t, x_t)

The null label is the UNet's last class embedding (index ``len(class_names)``): training replaced
a fraction of the labels with it. This module imports nothing else from the project, so the
class alone is enough to load and run an exported generator.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput, UNet2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor


class ClassConditionalPipeline(DiffusionPipeline):
    r"""
    Class-conditional image generation with classifier-free guidance.

    Parameters:
        unet ([`UNet2DModel`]): the denoiser, with ``num_class_embeds = len(class_names) + 1`` (the
            last embedding is the unconditional "null" class).
        scheduler ([`SchedulerMixin`]): any diffusers scheduler on the training noise schedule
            (the export holds the project's configured sampler, e.g. SDE-DPM-Solver++).
        class_names (`list[str]`): label names, in the order of the UNet's class embeddings.
        mode (`str`): ``"L"`` (grayscale) or ``"RGB"``: the PIL mode of the images.
        num_inference_steps (`int`), guidance_scale (`float`): the defaults of ``__call__`` (the
            settings the project's synthesis used).
        strength (`float`, *optional*): the default ``strength`` of a real-seeded call (``image=...``): the
            strength selection chose; absent in exports that were not selected for real-seeded synthesis.
        training_data (`dict`): identity of the training data (manifest hash, split hash, image
            count, seed); the full list of training-image hashes is in ``training_data.json``.
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: UNet2DModel, scheduler: SchedulerMixin, class_names: list[str] | None = None,
                 mode: str | None = None, num_inference_steps: int = 20, guidance_scale: float = 2.0,
                 training_data: dict[str, Any] | None = None, strength: float | None = None) -> None:
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        names = list(class_names) if class_names is not None else [
            str(i) for i in range(int(unet.config.num_class_embeds) - 1)]
        channels = int(unet.config.in_channels)
        self.register_to_config(class_names=names, mode=mode or ("L" if channels == 1 else "RGB"),
                                num_inference_steps=int(num_inference_steps), guidance_scale=float(guidance_scale),
                                training_data=dict(training_data or {}))
        if strength is not None:  # only an export of a real-seeded selection carries it (older folders stay as they were)
            self.register_to_config(strength=float(strength))

    @property
    def null_label(self) -> int:
        """Index of the unconditional label: one past the last class."""
        return len(self.config.class_names)

    def get_label_ids(self, labels: list[str | int]) -> list[int]:
        """Class names or indices -> indices, checked against the pipeline's classes."""
        names = list(self.config.class_names)
        ids = []
        for label in labels:
            if isinstance(label, str):
                if label not in names:
                    raise ValueError(f"class {label!r} is not one of this generator's classes: {', '.join(names)}")
                ids.append(names.index(label))
            elif 0 <= int(label) < len(names):
                ids.append(int(label))
            else:
                raise ValueError(f"class index {label} is outside 0..{len(names) - 1}")
        return ids

    @torch.no_grad()
    def __call__(
        self,
        class_labels: list[str | int] | str | int,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        image: torch.Tensor | None = None,
        strength: float | None = None,
        eta: float = 0.0,
    ) -> ImagePipelineOutput | tuple:
        r"""
        Generate one image per entry of ``class_labels``.

        Args:
            class_labels: class names (``"glioma"``) or indices, one per image.
            num_inference_steps: denoising steps (default: the exported synthesis setting).
            guidance_scale: classifier-free guidance weight ``w``; 1 is the plain conditional model,
                0 the unconditional one (default: the exported synthesis setting).
            generator: a `torch.Generator`, or a list with one per image: per-image generators make
                every image reproducible on its own, in any batch (the project seeds image ``i`` of
                class ``c`` with ``seed`` column of the synthesis manifest).
            output_type: ``"pil"`` (PIL images in the domain's mode), ``"np"`` (float32 array
                (N, H, W, C) in [0, 1]) or ``"pt"`` (float32 tensor (N, C, H, W) in [0, 1]).
            return_dict: return an [`ImagePipelineOutput`] rather than a tuple.
            image: optional seed images (float tensor (N, C, H, W) in [-1, 1], one per label): each is
                noised to the timestep at ``strength`` of the schedule and denoised from there with its
                label (SDEdit, "real-seeded" synthesis); None samples from pure noise.
            strength: in (0, 1), how much of the schedule a seed image is noised through (with ``image``;
                default: the exported selection's strength, when it has one).
            eta: DDIM's stochasticity (ignored by the other schedulers).
        """
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type = {output_type!r} is invalid; expected 'pil', 'np' or 'pt'")
        if isinstance(class_labels, (str, int)):
            class_labels = [class_labels]
        labels = self.get_label_ids(list(class_labels))
        steps = int(num_inference_steps if num_inference_steps is not None else self.config.num_inference_steps)
        w = float(guidance_scale if guidance_scale is not None else self.config.guidance_scale)
        if w < 0:
            raise ValueError(f"guidance_scale = {w} is invalid; expected a number >= 0")
        if isinstance(generator, list) and len(generator) != len(labels):
            raise ValueError(f"{len(generator)} generators for {len(labels)} images; pass one per image")

        device = self._execution_device
        size, channels = self.unet.config.sample_size, self.unet.config.in_channels
        size = (size, size) if isinstance(size, int) else tuple(size)
        # noise drawn on the CPU from the caller's generators: the same seeds give the same images on any device
        noise = randn_tensor((len(labels), channels, *size), generator=generator, dtype=torch.float32)
        noise = noise.to(device=device, dtype=self.unet.dtype)
        cond = torch.tensor(labels, dtype=torch.long, device=device)
        guided = w != 1.0
        both = torch.cat([cond, torch.full_like(cond, self.null_label)]) if guided else cond

        self.scheduler.set_timesteps(steps)
        timesteps = self.scheduler.timesteps
        seeds = image
        if seeds is not None and strength is None:
            strength = self.config.get("strength")
        if seeds is None:
            image = noise * self.scheduler.init_noise_sigma
        else:
            if strength is None or not 0.0 < strength < 1.0:
                raise ValueError(f"strength = {strength} is invalid; expected a number strictly between 0 and 1")
            if tuple(seeds.shape) != tuple(noise.shape):
                raise ValueError(f"seed images have shape {tuple(seeds.shape)}, expected {tuple(noise.shape)}")
            begin = len(timesteps) - max(1, round(len(timesteps) * strength))
            timesteps = timesteps[begin:]
            if hasattr(self.scheduler, "set_begin_index"):
                self.scheduler.set_begin_index(begin)
            image = self.scheduler.add_noise(seeds.to(device=device, dtype=noise.dtype), noise,
                                             timesteps[:1].repeat(len(labels)))
        # stochastic schedulers (DDPM, SDE-DPM-Solver++) draw fresh noise each step: from the same generators
        parameters = inspect.signature(self.scheduler.step).parameters
        step_kwargs: dict[str, Any] = {"generator": generator} if "generator" in parameters else {}
        if "eta" in parameters:
            step_kwargs["eta"] = eta
        for t in self.progress_bar(timesteps):
            model_input = self.scheduler.scale_model_input(image, t)
            if guided:
                out = self.unet(torch.cat([model_input, model_input]), t, class_labels=both).sample
                out_cond, out_uncond = out.chunk(2)
                out = out_uncond + w * (out_cond - out_uncond)
            else:
                out = self.unet(model_input, t, class_labels=cond).sample
            image = self.scheduler.step(out, t, image, **step_kwargs).prev_sample

        image = (image.float() / 2 + 0.5).clamp(0, 1).cpu()
        if output_type != "pt":
            image = image.permute(0, 2, 3, 1).numpy()
            if output_type == "pil":
                image = self.numpy_to_pil(image)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (image,)
        return ImagePipelineOutput(images=image)
