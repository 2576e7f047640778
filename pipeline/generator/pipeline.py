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

Options for diversity (issue 21), each off by default and exported as a default when synthesis used it:

- ``guidance_interval=(lo, hi)``: guide only where the noise level sigma_t = sqrt((1 - abar_t) / abar_t)
  lies in (lo, hi]; elsewhere the plain conditional model runs (one pass). Strong guidance at high noise
  collapses the variety of layouts, at low noise it only sharpens (Kynkaanniemi et al. 2024, arXiv 2404.07724).
- ``guidance_range=(lo, hi)``: every image draws its own weight w from U(lo, hi) (from its own seed).
- ``cads_noise_scale=s`` with ``cads_interval=(tau1, tau2)``: condition-annealed sampling (Sadat et al.
  2023, arXiv 2310.17347): the class embedding y becomes sqrt(g) y + s sqrt(1 - g) n at normalised time
  t = timestep / T, g = 1 below tau1, 0 above tau2, linear between; rescaled to y's mean and std (psi).
- ``guide_unet`` + ``guidance_method="autoguidance"``: the guide is a weaker model of the same kind (an early
  checkpoint), eps = eps_guide(x, c) + w (eps(x, c) - eps_guide(x, c)) (Karras et al. 2024, arXiv 2406.02507).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput, UNet2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor


SAMPLING_OPTIONS = ("guidance_interval", "guidance_range", "cads_noise_scale", "cads_interval", "cads_psi",
                    "guidance_method")


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
    _optional_components = ["guide_unet"]

    def __init__(self, unet: UNet2DModel, scheduler: SchedulerMixin, class_names: list[str] | None = None,
                 mode: str | None = None, num_inference_steps: int = 20, guidance_scale: float = 2.0,
                 training_data: dict[str, Any] | None = None, strength: float | None = None,
                 guide_unet: UNet2DModel | None = None, sampling_options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, guide_unet=guide_unet)
        names = list(class_names) if class_names is not None else [
            str(i) for i in range(int(unet.config.num_class_embeds) - 1)]
        channels = int(unet.config.in_channels)
        self.register_to_config(class_names=names, mode=mode or ("L" if channels == 1 else "RGB"),
                                num_inference_steps=int(num_inference_steps), guidance_scale=float(guidance_scale),
                                training_data=dict(training_data or {}))
        if strength is not None:  # only an export of a real-seeded selection carries it (older folders stay as they were)
            self.register_to_config(strength=float(strength))
        if sampling_options:  # the diversity options synthesis used (only when it used any: older folders unchanged)
            unknown = set(sampling_options) - set(SAMPLING_OPTIONS)
            if unknown:
                raise ValueError(f"unknown sampling options {sorted(unknown)}; known: {', '.join(SAMPLING_OPTIONS)}")
            self.register_to_config(sampling_options=dict(sampling_options))

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
        guidance_interval: tuple[float, float] | None = None,
        guidance_range: tuple[float, float] | None = None,
        cads_noise_scale: float | None = None,
        cads_interval: tuple[float, float] | None = None,
        cads_psi: float | None = None,
        guidance_method: str | None = None,
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
            guidance_interval: (lo, hi): guide only where sigma_t is in (lo, hi] (default: every step).
            guidance_range: (lo, hi): a per-image guidance weight drawn from U(lo, hi) instead of guidance_scale.
            cads_noise_scale, cads_interval, cads_psi: condition-annealed sampling (0 = off; interval (tau1,
                tau2) of normalised time, default (0.6, 0.9); psi 1 = fully rescaled).
            guidance_method: "cfg" (the null class is the guide) or "autoguidance" (``guide_unet`` is).
            Each of these defaults to the export's ``sampling_options`` (what synthesis used), else off.
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

        options = self._sampling_options(guidance_interval=guidance_interval, guidance_range=guidance_range,
                                         cads_noise_scale=cads_noise_scale, cads_interval=cads_interval,
                                         cads_psi=cads_psi, guidance_method=guidance_method)
        device = self._execution_device
        size, channels = self.unet.config.sample_size, self.unet.config.in_channels
        size = (size, size) if isinstance(size, int) else tuple(size)
        # noise drawn on the CPU from the caller's generators: the same seeds give the same images on any device
        noise = randn_tensor((len(labels), channels, *size), generator=generator, dtype=torch.float32)
        noise = noise.to(device=device, dtype=self.unet.dtype)
        cond = torch.tensor(labels, dtype=torch.long, device=device)
        weights = self._guidance_weights(w, options["guidance_range"], generator, len(labels)).to(device)
        autoguided = options["guidance_method"] == "autoguidance"
        guided = bool((weights != 1.0).any())
        negative = torch.full_like(cond, self.null_label)

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
        cads = _ConditionAnnealing(options, generator, len(labels), self.num_train_timesteps)
        weights = weights.view(-1, 1, 1, 1)
        for t in self.progress_bar(timesteps):
            model_input = self.scheduler.scale_model_input(image, t)
            with cads.at(t, [self.unet, self.guide_unet], cond != self.null_label):
                if guided and self._guides_at(t, options["guidance_interval"]):
                    if autoguided:
                        out_cond = self.unet(model_input, t, class_labels=cond).sample
                        out_guide = self.guide_unet(model_input, t, class_labels=cond).sample
                    else:
                        out = self.unet(torch.cat([model_input, model_input]), t,
                                        class_labels=torch.cat([cond, negative])).sample
                        out_cond, out_guide = out.chunk(2)
                    out = out_guide + weights.to(out_cond.dtype) * (out_cond - out_guide)
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

    # ------------------------------------------------------------------------------------------
    # diversity options (issue 21)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    def _sampling_options(self, **given: Any) -> dict[str, Any]:
        """Call arguments over the export's ``sampling_options`` over off; checked once, here."""
        exported = dict(self.config.get("sampling_options") or {})
        options = {name: given[name] if given.get(name) is not None else exported.get(name) for name in SAMPLING_OPTIONS}
        options["guidance_method"] = options["guidance_method"] or "cfg"
        if options["guidance_method"] not in ("cfg", "autoguidance"):
            raise ValueError(f"guidance_method = {options['guidance_method']!r} is invalid; expected 'cfg' or "
                             "'autoguidance'")
        if options["guidance_method"] == "autoguidance" and self.guide_unet is None:
            raise ValueError("guidance_method = 'autoguidance' needs a guide_unet (an earlier checkpoint of this "
                             "generator); this pipeline has none")
        for name in ("guidance_interval", "guidance_range", "cads_interval"):
            pair = options[name]
            if pair is not None and (len(pair) != 2 or not 0 <= float(pair[0]) <= float(pair[1])):
                raise ValueError(f"{name} = {pair!r} is invalid; expected (low, high) with 0 <= low <= high")
        options["cads_noise_scale"] = float(options["cads_noise_scale"] or 0.0)
        options["cads_interval"] = tuple(options["cads_interval"] or (0.6, 0.9))
        options["cads_psi"] = float(1.0 if options["cads_psi"] is None else options["cads_psi"])
        if options["cads_noise_scale"] < 0 or not 0 <= options["cads_psi"] <= 1 or options["cads_interval"][1] > 1:
            raise ValueError("CADS needs cads_noise_scale >= 0, cads_psi in [0, 1] and cads_interval within [0, 1]")
        return options

    @staticmethod
    def _guidance_weights(w: float, guidance_range: tuple[float, float] | None,
                          generator: torch.Generator | list[torch.Generator] | None, count: int) -> torch.Tensor:
        """One guidance weight per image: ``w``, or a draw from U(range) by a generator derived from the image's
        own (so the weight is reproducible and does not shift the image's noise draws)."""
        if guidance_range is None:
            return torch.full((count,), float(w))
        low, high = float(guidance_range[0]), float(guidance_range[1])
        draws = torch.stack([torch.rand((), generator=g) for g in _side_generators(generator, count, salt=1)])
        return low + (high - low) * draws

    def _guides_at(self, t: torch.Tensor | int, interval: tuple[float, float] | None) -> bool:
        if interval is None:
            return True
        abar = float(self.scheduler.alphas_cumprod[int(t)])
        sigma = ((1.0 - abar) / max(abar, 1e-12)) ** 0.5
        return float(interval[0]) < sigma <= float(interval[1])


def _side_generators(generator: torch.Generator | list[torch.Generator] | None, count: int,
                     salt: int) -> list[torch.Generator | None]:
    """Per image, a generator seeded from the image's own seed and ``salt``: extra randomness (guidance draws,
    CADS noise) that is reproducible per image and leaves the image's own noise stream untouched."""
    if generator is None:
        return [None] * count
    generators = generator if isinstance(generator, list) else [generator] * count
    return [torch.Generator().manual_seed((g.initial_seed() * 1_000_003 + salt * 7_919 + k * (not isinstance(
        generator, list))) % 2**63) for k, g in enumerate(generators)]


class _ConditionAnnealing:
    """CADS on the UNets' class embeddings, as a forward hook active for one denoising step at a time."""

    def __init__(self, options: dict[str, Any], generator: Any, count: int, num_train_timesteps: int) -> None:
        self.scale = options["cads_noise_scale"]
        self.tau1, self.tau2 = (float(v) for v in options["cads_interval"])
        self.psi = options["cads_psi"]
        self.num_train_timesteps = num_train_timesteps
        self.generators = _side_generators(generator, count, salt=2) if self.scale > 0 else []

    def gamma(self, t: torch.Tensor | int) -> float:
        """1 (clean condition) at low noise, 0 (pure noise) at high noise, linear between tau1 and tau2."""
        s = float(t) / self.num_train_timesteps
        if s <= self.tau1:
            return 1.0
        if s >= self.tau2:
            return 0.0
        return (self.tau2 - s) / (self.tau2 - self.tau1)

    @contextlib.contextmanager
    def at(self, t: torch.Tensor | int, unets: list[UNet2DModel | None], conditional: torch.Tensor) -> Iterator[None]:
        gamma = self.gamma(t) if self.scale > 0 else 1.0
        if gamma >= 1.0:
            yield
            return
        count = len(conditional)
        handles, drawn = [], []  # one noise draw per step, shared by the model and its guide

        def anneal(_module: Any, _inputs: Any, y: torch.Tensor) -> torch.Tensor:
            rows = y.shape[0] // count  # the guided batch is doubled: [conditional; null]
            if not drawn:
                drawn.append(torch.stack([torch.randn(y.shape[1:], generator=g) for g in self.generators]))
            noise = drawn[0].to(y)
            mask = torch.cat([conditional, torch.zeros_like(conditional).repeat(rows - 1)]).to(y.device)
            noisy = gamma ** 0.5 * y + self.scale * (1 - gamma) ** 0.5 * noise.repeat(rows, 1)
            mean, std = y.mean(dim=1, keepdim=True), y.std(dim=1, keepdim=True)
            rescaled = (noisy - noisy.mean(dim=1, keepdim=True)) / noisy.std(dim=1, keepdim=True).clamp_min(1e-8)
            mixed = self.psi * (rescaled * std + mean) + (1 - self.psi) * noisy
            return torch.where(mask[:, None], mixed, y)

        for unet in unets:
            if unet is not None and getattr(unet, "class_embedding", None) is not None:
                handles.append(unet.class_embedding.register_forward_hook(anneal))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
