"""Generator and synthesis settings (pipeline.generator): the UNet, its training, the sampler and selection."""

from __future__ import annotations

import typing
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config.base import FieldProblem, MixedPrecision, Sampler, Section


class GeneratorConfig(Section):
    """Class-conditional diffusion UNet and its training schedule (used by pipeline.generator)."""

    image_size: int = Field(64, ge=16, multiple_of=8)
    block_out_channels: list[int] = [32, 64, 128, 128]
    layers_per_block: int = Field(1, ge=1)
    attention_levels: list[bool] = [False, False, False, True]
    train_steps: int = Field(2000, ge=1)
    batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(2e-4, gt=0)
    warmup_steps: int = Field(100, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, ge=0)
    """max global gradient norm; 0 = no clipping"""
    ema_decay: float = Field(0.999, ge=0, lt=1)
    """EMA of the weights (what sampling uses). The decay at step t is min(ema_decay, 1 - (1 + t) **
    -ema_power): with ema_power 1 the EMA is the plain running mean of all weights until step 1 / (1 -
    ema_decay) - 1, then an exponential average with time constant 1 / (1 - ema_decay) steps, so the configured
    decay is reached (0.99 at step 99, 0.995 at step 199, 0.9999 at step 9999). diffusers' default power 2/3
    reaches 0.995 only at step ~2800 and 0.999 at ~31600: shorter runs silently use a much smaller decay. The
    generator summary records the decay actually reached at the last step (ema_decay_reached)."""
    ema_power: float = Field(1.0, gt=0, le=1)
    num_train_timesteps: int = Field(1000, ge=2)
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "squaredcos_cap_v2"
    prediction_type: Literal["epsilon", "v_prediction"] = "v_prediction"
    """v_prediction: x0 = alpha * x_t - sigma * v stays bounded at high noise, where epsilon prediction's x0 =
    (x_t - sigma * eps) / alpha multiplies the model's error by sigma / alpha. Decided on development images
    (benchmarks/results/ablation/, row 4 vs 3 with Min-SNR-5 and EMA power 1): synthetic-only +34.5 points on
    brain-mri and +7.7 on covid-ct, significant after Holm on both"""
    snr_gamma: float = Field(5.0, ge=0)
    """Min-SNR-gamma loss weighting (Hang et al. 2023): per-timestep weight min(SNR, gamma) / SNR (epsilon) or
    min(SNR, gamma) / (SNR + 1) (v); 0 = off (plain MSE)"""
    class_dropout: float = Field(0.1, ge=0, lt=1)
    """label dropout for classifier-free guidance"""
    augment_flip: bool = False
    """horizontal flips: only where anatomy allows it"""
    augment_affine: bool = True
    """small rotation/scale/shift"""
    affine_degrees: float = Field(5.0, ge=0, le=45)
    """max rotation of the light affine augmentation"""
    affine_scale: float = Field(0.05, ge=0, lt=0.5)
    """max relative zoom in or out"""
    affine_shift: float = Field(0.03, ge=0, lt=0.5)
    """max shift as a fraction of the image side"""
    checkpoint_every: int = Field(500, ge=1)
    keep_checkpoints: int = Field(3, ge=1)
    guide_step: int | None = Field(None, ge=1)
    """keep the EMA weights of this (early) step as the autoguidance guide, exported beside the final weights
    (``synthesis.guidance_method: autoguidance``; Karras et al. 2024 guide with a weaker model of the same
    kind). None = no guide. Must be below train_steps."""
    mixed_precision: MixedPrecision = "no"
    """auto: bf16 on a GPU, none on a CPU"""

    @model_validator(mode="after")
    def _guide_before_the_end(self) -> "GeneratorConfig":
        if self.guide_step is not None and self.guide_step >= self.train_steps:
            raise FieldProblem("guide_step", self.guide_step,
                               f"a step below train_steps = {self.train_steps} (the guide is an earlier, weaker model)")
        return self

    @field_validator("block_out_channels")
    @classmethod
    def _channels(cls, value: list[int]) -> list[int]:
        if len(value) < 2:
            raise ValueError("a list of at least 2 channel counts")
        if not all(c >= 8 and c % 8 == 0 for c in value):
            raise ValueError("channel counts that are multiples of 8")
        return value

    @model_validator(mode="after")
    def _levels(self) -> GeneratorConfig:
        levels = len(self.block_out_channels)
        if self.image_size % (2 ** (levels - 1)):
            raise FieldProblem("image_size", self.image_size, f"divisible by 2**(levels-1) = {2 ** (levels - 1)}")
        if len(self.attention_levels) != levels:
            raise FieldProblem("attention_levels", self.attention_levels,
                               f"a list of {levels} booleans (one per level of block_out_channels)")
        return self

    def ema_decay_at(self, step: int) -> float:
        """The EMA decay used at optimizer step ``step`` (1-based), as diffusers' EMAModel computes it."""
        return min(self.ema_decay, max(0.0, 1.0 - (1.0 + max(step - 1, 0)) ** -self.ema_power))


# Generator settings added after stores already held trained generators, with the value that reproduces
# the behaviour from before the setting existed: at that value the setting is left out of cache keys and
# checkpoint comparisons, so a generator trained before the setting existed is still found and resumed.
GENERATOR_LEGACY_VALUES: dict[str, Any] = {"ema_power": 2.0 / 3.0, "snr_gamma": 0.0, "guide_step": None}
X0Clip = Literal["auto", "off", "clip", "dynamic"]
X0_CLIPS: tuple[str, ...] = typing.get_args(X0Clip)
SynthesisMode = Literal["noise", "real-seeded"]
SYNTHESIS_MODES: tuple[str, ...] = typing.get_args(SynthesisMode)
SAMPLER_SETTINGS: tuple[str, ...] = ("sampler", "steps", "guidance_scale", "x0_clip", "dynamic_threshold_ratio",
                                     "dynamic_threshold_max", "timestep_spacing", "solver_order",
                                     "lambda_min_clipped", "ddim_eta")


class SynthesisConfig(Section):
    """How the balanced synthetic set is sampled from the trained generator.

    The sampler settings below are the one source for ``synthesis``, ``generator sample`` and
    ``generator grid`` alike (pipeline.generator.sampling.make_sampler builds every scheduler from them).
    """

    per_class: int = Field(100, ge=1)
    """images generated for every class (balanced)"""
    per_class_multiple: float | None = Field(None, gt=0)
    """instead of per_class: each class gets this multiple of its count in the real training sample (rounded,
    at least 1): 2 = twice as many synthetic images as real ones per class. Synthetic-only data matched real
    data only at 2-3x the real count in Khosravi et al. 2024. None = per_class for every class."""
    sampler: Sampler = "sde-dpmsolver++"
    """the denoising loop's solver (SAMPLERS)"""
    steps: int = Field(25, ge=1)
    """denoising steps"""
    guidance_scale: float = Field(2.0, ge=0)
    """classifier-free guidance; 1 = off, 0 = unconditional"""
    batch_size: int = Field(32, ge=1)
    x0_clip: X0Clip = "auto"
    """What happens to the sampler's intermediate x0 predictions: "off" = nothing (the final image is clamped
    to the data range once), "clip" = hard clip to [-1, 1] at every step (pulls data at the range edge, e.g.
    black MRI background, inwards), "dynamic" = Imagen's dynamic thresholding (percentile
    dynamic_threshold_ratio, at most dynamic_threshold_max), "auto" = off for a v-prediction generator, clip
    for an epsilon one. Measured (benchmarks/results/ablation/sampler-oracle.md, brain-mri-defaults.md):
    clipping biases a background at the range edge in proportion to the model's error and dynamic thresholding
    more, while "off" stays within the sample's spread; a v-prediction generator is best with "off" (intensity
    gap 0.010 vs 0.011 clip, 0.035 dynamic), an epsilon one needs the clip (its x0 = (x - sigma eps) / alpha
    explodes at t = T of the cosine schedule: 0.197 clip vs 0.218 off)."""
    dynamic_threshold_ratio: float = Field(0.995, gt=0, le=1)
    dynamic_threshold_max: float = Field(1.5, ge=1)
    timestep_spacing: Literal["trailing", "leading", "linspace"] = "trailing"
    """"trailing" starts every sampler at t = T (pure noise, as the model was trained); diffusers' "leading"
    default for DDIM/DDPM never does (Lin et al. 2024, "Common diffusion noise schedules ... are flawed")."""
    solver_order: int = Field(2, ge=1, le=3)
    """DPM-Solver++ order (2 is the guided-sampling recommendation)"""
    lambda_min_clipped: float = Field(-5.1, le=0)
    """DPM-Solver++: lower bound on log(alpha/sigma); keeps the cosine schedule's first step finite"""
    ddim_eta: float = Field(0.0, ge=0, le=1)
    """DDIM stochasticity (0 = deterministic)"""
    guidance_interval: list[float] | None = None
    """[low, high] noise levels sigma = sqrt((1 - abar) / abar) where guidance applies (elsewhere the plain
    conditional model runs, at half the cost); None = every step. Strong guidance at high noise narrows the
    layouts a class gets; Kynkaanniemi et al. 2024 (arXiv 2404.07724) guide only in the middle of the range."""
    guidance_range: list[float] | None = None
    """[low, high]: every image draws its own guidance weight from U(low, high) (from its own seed) instead of
    guidance_scale: a set mixing faithful and diverse samples. None = guidance_scale for every image."""
    cads_noise_scale: float = Field(0.0, ge=0)
    """condition-annealed sampling (CADS, Sadat et al. 2023, arXiv 2310.17347): noise of this scale on the class
    embedding early in sampling (t / T above cads_interval[0]), for diversity on small data; 0 = off"""
    cads_interval: list[float] = Field(default_factory=lambda: [0.6, 0.9], min_length=2, max_length=2)
    """[tau1, tau2] of normalised time t / T: the condition is clean below tau1, pure noise above tau2"""
    cads_psi: float = Field(1.0, ge=0, le=1)
    """how much the noised embedding is rescaled back to the clean one's mean and std (CADS' psi)"""
    guidance_method: Literal["cfg", "autoguidance"] = "cfg"
    """cfg: the unconditional (null-class) prediction is the guide; autoguidance: the generator's early
    checkpoint (generator.guide_step) is (Karras et al. 2024, arXiv 2406.02507)"""
    filter: Literal["off", "reference"] = "off"
    """reference: drop every synthetic image the real arm's fold models (the reference) assign to another class,
    judged out of fold for real-seeded images; uncertain-but-correct images stay. Dropped images are replaced
    by more of the same class (pipeline.generator.filtering)."""
    filter_max_factor: float = Field(3.0, ge=1)
    """with filter: at most this many times a class's count is generated to replace dropped images"""
    mode: SynthesisMode = "noise"
    """noise: start from pure noise. real-seeded (SDEdit): noise an image of the real training sample to
    `strength` (fraction of the schedule) and denoise it with its own label."""
    strength: float = Field(0.6, gt=0, lt=1)
    select: bool = False
    """Selection without peeking (pipeline.generator.selection): when true, the guidance scale, the checkpoint
    and (real-seeded) the strength are chosen among the candidates below by the quality signal computed on the
    real training sample only; the configured values above are then only the fallback."""
    guidance_candidates: list[float] = Field(default_factory=lambda: [1.0, 1.25, 1.5, 2.0, 3.0], min_length=1)
    strength_candidates: list[float] = Field(default_factory=lambda: [0.4, 0.6, 0.8], min_length=1)
    checkpoint_candidates: int = Field(2, ge=1)
    """the newest N training checkpoints (EMA weights) are candidates"""
    select_per_class: int = Field(8, ge=1)
    """images per class and candidate that the signal scores. The score's standard error shrinks as 1/sqrt(n):
    at 8 images per class one image moves a class's CAS by 0.125; the plan says how many would bring the SE
    under select_tolerance (pipeline.generator.select_score)"""
    select_tolerance: float = Field(0.03, ge=0)
    """a candidate within max(this, the SE of its difference from the best) of the best score counts as tied;
    ties go to the more diverse setting (lower guidance, higher strength, newer checkpoint)"""
    select_diversity_weight: float = Field(0.1, ge=0)
    """weight of novelty (0 = copies of real training images, 1 = as far from them as real images are from each
    other) in the selection score CAS - gap + weight * novelty. Without it a gap near 0 and the reference's own
    accuracy make near-copies of the seed images win; at 0.1 a set of copies loses 0.1 against a fresh set of
    equal CAS and gap (10 CAS points: more than the SE margin at 16+ images per class), while a real difference
    in label agreement of more than 10 points still outweighs full novelty. 0 restores CAS - gap."""

    @field_validator("guidance_candidates")
    @classmethod
    def _guidances(cls, value: list[float]) -> list[float]:
        if any(g < 0 for g in value):
            raise ValueError("a non-empty list of numbers >= 0")
        return value

    @field_validator("strength_candidates")
    @classmethod
    def _strengths(cls, value: list[float]) -> list[float]:
        if any(not 0 < v < 1 for v in value):
            raise ValueError("a non-empty list of numbers strictly between 0 and 1")
        return value

    @field_validator("guidance_interval", "guidance_range", "cads_interval")
    @classmethod
    def _pairs(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and (len(value) != 2 or not 0 <= value[0] <= value[1]):
            raise ValueError("[low, high] with 0 <= low <= high")
        return value

    @model_validator(mode="after")
    def _cads_interval_in_unit_range(self) -> "SynthesisConfig":
        if self.cads_interval[1] > 1:
            raise ValueError(f"cads_interval = {self.cads_interval} is invalid; its values are fractions of the "
                             "schedule, within [0, 1]")
        return self

    def sampling_options(self) -> dict[str, Any]:
        """The diversity options of the sampling loop that differ from off (what the pipeline call and its
        export receive; empty for every configuration written before they existed)."""
        options: dict[str, Any] = {}
        if self.guidance_interval is not None:
            options["guidance_interval"] = list(self.guidance_interval)
        if self.guidance_range is not None:
            options["guidance_range"] = list(self.guidance_range)
        if self.guidance_method != "cfg":
            options["guidance_method"] = self.guidance_method
        if self.cads_noise_scale > 0:
            options.update(cads_noise_scale=self.cads_noise_scale, cads_interval=list(self.cads_interval),
                           cads_psi=self.cads_psi)
        return options

    def sampler_settings(self) -> dict[str, Any]:
        """Every setting that changes what one sampler call produces (cache keys hash exactly these; the
        diversity options only when on, so keys of sets sampled without them stay as they were)."""
        return {**{k: getattr(self, k) for k in SAMPLER_SETTINGS}, **self.sampling_options()}


