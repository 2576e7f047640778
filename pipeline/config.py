"""Typed configuration: one pydantic model per stage and a DomainConfig that holds them.

Layering (the one place it is defined; README "Configuration" points here). Later layers win,
mappings merge key by key, everything else (lists included) replaces:

    1. model defaults                 the field defaults below
    2. profile                        flows/configs/profiles/<profile>.yaml: sizes for the machine (cpu | gpu)
    3. domain                         flows/configs/domains/<domain>.yaml (or a YAML path): classes, mode, counts
    4. domain.profiles.<profile>      the domain file's own overrides for that profile
    5. budget                         flows/configs/budgets/<budget>.yaml ``overrides`` (optional; the budget
                                      names its profile, which is then the default profile)
    6. overrides                      ``--set key=value`` on the command line (value parsed as YAML), or the
                                      ``overrides`` mapping of ``load_domain_config``

Validation: unknown keys are errors (a typo must not silently fall back to a default); types are
strict (booleans are YAML true/false, numbers are numbers, no "true" or "5" strings); ranges are
``Field`` constraints or validators. Every problem becomes one ``ConfigError`` line that names the
dotted key and what is allowed. ``DomainConfig.model_json_schema()`` is the JSON schema (Prefect
shows it for flow parameters).
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import re
import tokenize
import types
import typing
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline import yaml_bounded
from pipeline.errors import ConfigError, DataError, short

ChannelMode = Literal["L", "RGB"]
Profile = Literal["cpu", "gpu"]
PROFILES: tuple[str, ...] = typing.get_args(Profile)
# One vocabulary for mixed precision (generator and classifiers): auto = bf16 on a GPU, none on a CPU.
MixedPrecision = Literal["auto", "no", "bf16", "fp16"]
Sampler = Literal["sde-dpmsolver++", "dpmsolver++", "ddim", "ddpm"]
SAMPLERS: tuple[str, ...] = typing.get_args(Sampler)
Architecture = Literal["resnet18", "resnet50", "vgg16", "vgg19", "alexnet", "densenet121", "mobilenetv2_100",
                       "googlenet"]
CLASSIFIER_ARCHITECTURES: tuple[str, ...] = typing.get_args(Architecture)
Arm = Literal["synthetic", "real", "real+aug", "real+synthetic", "synthetic->real"]
ARMS: tuple[str, ...] = typing.get_args(Arm)
PaddingMode = Literal["zeros", "border", "reflection"]


class FieldProblem(ValueError):
    """Raised by a model-level check about one field: the message names ``field`` under the model's key."""

    def __init__(self, field: str, value: Any, expected: str) -> None:
        super().__init__(f"{field} = {short(value)} is invalid; expected {expected}")
        self.field, self.value, self.expected = field, value, expected


class Section(BaseModel):
    """Base of every config model: unknown keys forbidden, strict types. Build from user data with
    ``from_dict`` (errors become one ConfigError line); direct construction raises pydantic's error."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """The comment beside (or above) each field becomes its description in the JSON schema."""
        super().__pydantic_init_subclass__(**kwargs)
        described = False
        for name, text in _field_comments(cls).items():
            info = cls.model_fields.get(name)
            if info is not None and info.description is None:
                info.description = text
                described = True
        if described:
            cls.model_rebuild(force=True)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="python")


def _field_comments(cls: type) -> dict[str, str]:
    """Field name -> the ``# comment`` on its line in the class source, else the comment lines just above it."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):  # no source (frozen app, interactive definition): no descriptions
        return {}
    out: dict[str, str] = {}
    above: list[str] = []
    for line in lines[1:]:
        if re.match(r"^    #", line):
            above.append(line.strip().lstrip("#").strip())
            continue
        field = re.match(r"^    (\w+)\s*:", line)
        if field:
            text = _trailing_comment(line) or " ".join(above)
            if text:
                out[field.group(1)] = text
        above = []
    return out


def _trailing_comment(line: str) -> str:
    try:
        for token in tokenize.generate_tokens(io.StringIO(line.strip() + "\n").readline):
            if token.type == tokenize.COMMENT:
                return token.string.lstrip("#").strip()
    except (tokenize.TokenError, SyntaxError):  # a field spread over several lines: no comment taken
        pass
    return ""


class DataConfig(Section):
    """Where the real images are and how to read them."""

    path: str | None = None  # ImageFolder root, or a CSV/parquet manifest with path,label[,patient_id]
    mode: ChannelMode = "L"  # channels at every boundary: L = grayscale (MRI, CT), RGB = microscopy
    class_names: list[str] = []  # expected classes; empty = whatever is found
    min_side: int = Field(32, ge=1)  # images smaller than this on either side are quarantined
    max_pixels: int = Field(80_000_000, ge=1)  # decompression-bomb guard: larger images are quarantined unread
    # perceptual copies (256-bit pHash at most this many bits apart) form one group that the split keeps on
    # one side; -1 = off. 12 is measured in pipeline/near_duplicates.py
    near_duplicate_bits: int = Field(12, ge=-1, le=128)

    def resolve_class_names(self, labels: Iterable[Any]) -> list[str]:
        """The label order every stage uses: ``class_names`` when given, else the sorted labels found.

        Raises DataError when a label is not among the configured class names.
        """
        found = {str(label) for label in labels}
        names = list(self.class_names) or sorted(found)
        missing = sorted(found - set(names))
        if missing:
            raise DataError(f"labels {missing} are not in data.class_names {names}")
        return names


class SplitConfig(Section):
    """The study's protocol: a stratified 20% per class trains the generator, 80% is held out."""

    train_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    # The one knob for k: the classifiers run k-fold CV on the training side, and the split checks
    # that every class gives each fold a training image.
    cv_folds: int = Field(5, ge=2)
    # A development share of the held-out side, for choosing defaults (ablations, benchmarks) without ever
    # reading the test images; stratified and group-aware, drawn after the training sample so the generator's
    # data does not depend on it. 0 = the study's protocol: everything held out is test.
    dev_fraction: float = Field(0.0, ge=0.0, lt=1.0)

    def min_images_per_class(self) -> int:
        """Smallest class that still gives every CV fold one training image and leaves a test image."""
        import math

        held_out_needed = 2 if self.dev_fraction > 0 else 1  # a dev image and a test image per class
        return max(math.ceil(self.cv_folds / self.train_fraction), self.cv_folds + held_out_needed)


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
    grad_clip: float = Field(1.0, ge=0)  # max global gradient norm; 0 = no clipping
    # EMA of the weights (what sampling uses). The decay at step t is min(ema_decay, 1 - (1 + t) ** -ema_power):
    # with ema_power 1 the EMA is the plain running mean of all weights until step 1 / (1 - ema_decay) - 1,
    # then an exponential average with time constant 1 / (1 - ema_decay) steps, so the configured decay is
    # reached (0.99 at step 99, 0.995 at step 199, 0.9999 at step 9999). diffusers' default power 2/3 reaches
    # 0.995 only at step ~2800 and 0.999 at ~31600: shorter runs silently use a much smaller decay.
    # The generator summary records the decay actually reached at the last step (ema_decay_reached).
    ema_decay: float = Field(0.999, ge=0, lt=1)
    ema_power: float = Field(1.0, gt=0, le=1)
    num_train_timesteps: int = Field(1000, ge=2)
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "squaredcos_cap_v2"
    # v_prediction: x0 = alpha * x_t - sigma * v stays bounded at high noise, where epsilon prediction's
    # x0 = (x_t - sigma * eps) / alpha multiplies the model's error by sigma / alpha (measured on brain-mri:
    # intensity gap 0.197 with epsilon, 0.010 with v + Min-SNR; benchmarks/results/ablation/)
    prediction_type: Literal["epsilon", "v_prediction"] = "v_prediction"
    # Min-SNR-gamma loss weighting (Hang et al. 2023): per-timestep weight min(SNR, gamma) / SNR (epsilon) or
    # min(SNR, gamma) / (SNR + 1) (v); 0 = off (plain MSE)
    snr_gamma: float = Field(5.0, ge=0)
    class_dropout: float = Field(0.1, ge=0, lt=1)  # label dropout for classifier-free guidance
    augment_flip: bool = False  # horizontal flips: only where anatomy allows it
    augment_affine: bool = True  # small rotation/scale/shift
    affine_degrees: float = Field(5.0, ge=0, le=45)  # max rotation of the light affine augmentation
    affine_scale: float = Field(0.05, ge=0, lt=0.5)  # max relative zoom in or out
    affine_shift: float = Field(0.03, ge=0, lt=0.5)  # max shift as a fraction of the image side
    checkpoint_every: int = Field(500, ge=1)
    keep_checkpoints: int = Field(3, ge=1)
    mixed_precision: MixedPrecision = "no"  # auto: bf16 on a GPU, none on a CPU

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
GENERATOR_LEGACY_VALUES: dict[str, Any] = {"ema_power": 2.0 / 3.0, "snr_gamma": 0.0}
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

    per_class: int = Field(100, ge=1)  # images generated for every class (balanced)
    sampler: Sampler = "sde-dpmsolver++"  # the denoising loop's solver (SAMPLERS)
    steps: int = Field(25, ge=1)  # denoising steps
    guidance_scale: float = Field(2.0, ge=0)  # classifier-free guidance; 1 = off, 0 = unconditional
    batch_size: int = Field(32, ge=1)
    # What happens to the sampler's intermediate x0 predictions: "off" = nothing (the final image is clamped
    # to the data range once), "clip" = hard clip to [-1, 1] at every step (pulls data at the range edge,
    # e.g. black MRI background, inwards), "dynamic" = Imagen's dynamic thresholding (percentile
    # dynamic_threshold_ratio, at most dynamic_threshold_max), "auto" = off for a v-prediction generator,
    # clip for an epsilon one. Measured (benchmarks/results/ablation/sampler-oracle.md, brain-mri-defaults.md):
    # clipping biases a background at the range edge in proportion to the model's error and dynamic
    # thresholding more, while "off" stays within the sample's spread; a v-prediction generator is best
    # with "off" (intensity gap 0.010 vs 0.011 clip, 0.035 dynamic), an epsilon one needs the clip (its
    # x0 = (x - sigma eps) / alpha explodes at t = T of the cosine schedule: 0.197 clip vs 0.218 off).
    x0_clip: X0Clip = "auto"
    dynamic_threshold_ratio: float = Field(0.995, gt=0, le=1)
    dynamic_threshold_max: float = Field(1.5, ge=1)
    # "trailing" starts every sampler at t = T (pure noise, as the model was trained); diffusers' "leading"
    # default for DDIM/DDPM never does (Lin et al. 2024, "Common diffusion noise schedules ... are flawed").
    timestep_spacing: Literal["trailing", "leading", "linspace"] = "trailing"
    solver_order: int = Field(2, ge=1, le=3)  # DPM-Solver++ order (2 is the guided-sampling recommendation)
    # DPM-Solver++: lower bound on log(alpha/sigma); keeps the cosine schedule's first step finite
    lambda_min_clipped: float = Field(-5.1, le=0)
    ddim_eta: float = Field(0.0, ge=0, le=1)  # DDIM stochasticity (0 = deterministic)
    # noise: start from pure noise. real-seeded (SDEdit): noise an image of the real training sample to
    # `strength` (fraction of the schedule) and denoise it with its own label.
    mode: SynthesisMode = "noise"
    strength: float = Field(0.6, gt=0, lt=1)
    # Selection without peeking (pipeline.generator.selection): when true, the guidance scale, the
    # checkpoint and (real-seeded) the strength are chosen among the candidates below by the quality signal
    # computed on the real training sample only; the configured values above are then only the fallback.
    select: bool = False
    guidance_candidates: list[float] = Field(default_factory=lambda: [1.0, 1.25, 1.5, 2.0, 3.0], min_length=1)
    strength_candidates: list[float] = Field(default_factory=lambda: [0.4, 0.6, 0.8], min_length=1)
    checkpoint_candidates: int = Field(2, ge=1)  # the newest N training checkpoints (EMA weights) are candidates
    # images per class and candidate that the signal scores. The score's standard error shrinks as
    # 1/sqrt(n): at 8 images per class one image moves a class's CAS by 0.125; the plan says how many would
    # bring the SE under select_tolerance (pipeline.generator.select_score)
    select_per_class: int = Field(8, ge=1)
    # a candidate within max(this, the SE of its difference from the best) of the best score counts as tied;
    # ties go to the more diverse setting (lower guidance, higher strength, newer checkpoint)
    select_tolerance: float = Field(0.03, ge=0)
    # weight of novelty (0 = copies of real training images, 1 = as far from them as real images are from each
    # other) in the selection score CAS - gap + weight * novelty. Without it a gap near 0 and the reference's own
    # accuracy make near-copies of the seed images win; at 0.1 a set of copies loses 0.1 against a fresh set of
    # equal CAS and gap (10 CAS points: more than the SE margin at 16+ images per class), while a real
    # difference in label agreement of more than 10 points still outweighs full novelty. 0 restores CAS - gap.
    select_diversity_weight: float = Field(0.1, ge=0)
    reference_steps: int = Field(300, ge=1)  # optimizer steps per fold of the reference classifier

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

    def sampler_settings(self) -> dict[str, Any]:
        """Every setting that changes what one sampler call produces (cache keys hash exactly these)."""
        return {k: getattr(self, k) for k in SAMPLER_SETTINGS}


class AugmentConfig(Section):
    """MONAI augmentation of one domain (pipeline/augment.py builds it; the real+aug arm uses it).

    Spatial: random flips (only where the anatomy allows), one affine resample per image (rotation,
    zoom per axis, shift). Intensity (on [0, 1] images): bias field, gamma contrast, Gaussian noise,
    each applied with probability ``intensity_prob``. 0 (or gamma [1, 1]) switches a transform off.
    """

    hflip: bool = True  # left-right flips (p = 0.5)
    vflip: bool = False  # up-down flips (p = 0.5)
    rotation_deg: float = Field(15.0, ge=0, le=180)  # max rotation either way
    scale: float = Field(0.1, ge=0, lt=0.5)  # max relative zoom in or out (per axis)
    translate: float = Field(0.05, ge=0, lt=0.5)  # max shift as a fraction of the image side
    padding_mode: PaddingMode = "zeros"  # how the affine fills pixels from outside the image
    bias_field: float = Field(0.1, ge=0)  # max coefficient of MONAI's RandBiasField (degree 3); 0 = off
    contrast_gamma: list[float] = [0.8, 1.25]  # RandAdjustContrast gamma range; [1, 1] = off
    noise_std: float = Field(0.02, ge=0)  # max std of additive Gaussian noise (on [0, 1] images); 0 = off
    intensity_prob: float = Field(0.3, ge=0, le=1)  # probability of each intensity transform per image

    @field_validator("contrast_gamma")
    @classmethod
    def _gamma(cls, value: list[float]) -> list[float]:
        if len(value) != 2 or not 0 < value[0] <= value[1]:
            raise ValueError("[min, max] with 0 < min <= max")
        return value


class ClassifierConfig(Section):
    """The CNN panel and the evaluation protocol (used by classifiers/). CV folds: ``split.cv_folds``.

    Budget: ``budget: steps`` (default) gives every fit of every arm the same ``max_steps`` optimizer
    steps, validates every ``eval_every_steps`` and lets early stopping end a fit only after
    ``min_steps`` and ``patience_steps`` without improvement. ``budget: epochs`` is the old behaviour
    (``max_epochs`` passes over the arm's own training rows, ``patience`` in epochs), kept for the
    ablation. ``time_budget_s`` is a safety net only: a fit it ends is reported as such.
    """

    architectures: list[Architecture] = list(CLASSIFIER_ARCHITECTURES)  # the CNN panel (timm names)
    arms: list[Arm] = list(ARMS)  # training sets, each evaluated on the held-out real 80%
    pretrained: bool | Literal["auto"] = "auto"  # auto: pretrained weights when they can be had, else scratch
    checkpoints: dict[Architecture, str] = {}  # local weights per architecture: {resnet18: /w/r18.pth}
    image_size: int = Field(224, ge=16)
    budget: Literal["steps", "epochs"] = "steps"
    max_steps: int = Field(3000, ge=1)  # optimizer steps per fit, the same for every arm (budget: steps)
    min_steps: int = Field(1000, ge=0)  # early stopping may not end a fit before this many steps
    eval_every_steps: int = Field(100, ge=1)  # validation (early stopping, model selection) cadence
    patience_steps: int = Field(500, ge=1)  # steps without a validation-loss improvement before stopping
    max_epochs: int = Field(50, ge=1)  # budget: epochs only
    patience: int = Field(5, ge=1)  # budget: epochs only: epochs without a validation-loss improvement
    min_delta: float = Field(0.0, ge=0)  # an improvement must beat the best select_on value by more than this
    # model selection and early stopping on the real fold: val_loss (lowest cross-entropy) or
    # val_accuracy (highest accuracy, ties broken by the lower loss)
    select_on: Literal["val_loss", "val_accuracy"] = "val_loss"
    # the architecture whose fold ensemble answers for every arm (a planned comparison); null = each arm's
    # architecture is chosen on validation by select_on (classifiers/choice.py), never on held-out results
    primary_architecture: Architecture | None = None
    label_smoothing: float = Field(0.0, ge=0, lt=1)  # training loss only; validation loss stays plain
    # real: fold k of the real 20% sample validates every arm; arm: the arm's own fold (the old protocol)
    validation: Literal["real", "arm"] = "real"
    pretrain_fraction: float = Field(0.5, gt=0, lt=1)  # synthetic->real: share of the budget for pretraining
    batch_size: int = Field(64, ge=2)
    eval_batch_size: int = Field(128, ge=1)
    learning_rate: float = Field(1e-4, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    lr_schedule: Literal["cosine", "none"] = "cosine"  # cosine: anneal to 1% over the fit's budget
    time_budget_s: float | None = Field(None, gt=0)  # per fit; a reported safety net, never a budget
    mixed_precision: MixedPrecision = "auto"  # auto: bf16 autocast on a GPU, fp32 on a CPU
    augment: AugmentConfig = Field(default_factory=AugmentConfig)  # the real+aug arm (MONAI)

    @field_validator("architectures", "arms")
    @classmethod
    def _non_empty_unique(cls, value: list[str]) -> list[str]:
        if not value or len(set(value)) != len(value):
            raise ValueError("a non-empty list without repeated names")
        return value

    @field_validator("checkpoints")
    @classmethod
    def _paths(cls, value: dict[str, str]) -> dict[str, str]:
        if any(not path.strip() for path in value.values()):
            raise ValueError("a mapping of architecture name to a weights file path, e.g. {resnet18: /w/r18.pth}")
        return value

    @model_validator(mode="after")
    def _min_steps(self) -> ClassifierConfig:
        if self.min_steps > self.max_steps:
            raise FieldProblem("min_steps", self.min_steps, f"an integer in [0, max_steps = {self.max_steps}]")
        if self.primary_architecture is not None and self.primary_architecture not in self.architectures:
            raise FieldProblem("primary_architecture", self.primary_architecture,
                               f"one of the panel's architectures ({', '.join(self.architectures)}) or null")
        return self


class QualityGateConfig(Section):
    """Thresholds that stop (or only warn about) a run before classifiers train; null = not checked."""

    action: Literal["warn", "stop"] = "warn"
    min_label_agreement: float | None = Field(None, ge=0, le=1)  # CAS: mean per-class agreement of the reference
    max_memorised_fraction: float | None = Field(None, ge=0, le=1)  # share of synthetic images flagged as near-copies
    max_domain_fd_ratio: float | None = Field(None, gt=0)  # Fréchet distance (domain features): synthetic / real-vs-real
    min_domain_recall: float | None = Field(None, ge=0, le=1)  # improved recall (domain features), all classes


class QualityConfig(Section):
    """The quality stage between synthesis and classifiers (pipeline.quality.stage)."""

    enabled: bool = True
    extractors: list[Literal["domain", "inception"]] = ["domain", "inception"]
    inception_weights: str | None = None  # local inception_v3_google-0cc3c7bd.pth; else hub cache or download
    inception_download: bool = True  # try torchvision's download when no local file (fails fast offline)
    kid_subsets: int = Field(50, ge=1)
    kid_subset_size: int = Field(1000, ge=2)
    pr_k: int = Field(3, ge=1)  # k of the k-NN manifolds of improved precision/recall
    msssim_pairs: int = Field(100, ge=1)  # random pairs per class and set for the MS-SSIM diversity
    memorisation_quantile: float = Field(0.01, gt=0, lt=0.5)  # flag: closer to a training image than this quantile of real-to-real NN
    closest_pairs: int = Field(8, ge=0)  # closest synthetic/training pairs saved as images for the report
    drop_memorised: bool = False  # remove flagged near-copies from the synthetic set before classifiers train
    label_filter_confidence: float | None = Field(None, gt=0, le=1)  # drop images the reference assigns to another class with p >= this
    gate: QualityGateConfig = Field(default_factory=QualityGateConfig)

    @field_validator("extractors")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a list without repeats from: domain, inception")
        return value


Segmentation = Literal["slic", "quickshift", "felzenszwalb"]


class ReportConfig(Section):
    """LIME explanations and the HTML report (used by reports/)."""

    explain: bool = True  # run LIME; false leaves the report's Explanations section as "not run"
    num_samples: int = Field(1000, ge=10)  # perturbed images per explanation (LIME's neighbourhood)
    batch_size: int = Field(64, ge=1)  # perturbed images per model call (LIME's own default is 10)
    segmentation: Segmentation = "slic"  # superpixels on the gray image rendered to 3 channels
    n_segments: int = Field(40, ge=2)  # slic/felzenszwalb target count (quickshift: ~8 at 128 px, too coarse)
    compactness: float = Field(10.0, gt=0)  # slic: shape regularity (higher = squarer superpixels)
    top_k: int = Field(5, ge=1)  # superpixels reported per explanation
    top_fraction: float = Field(0.2, gt=0, lt=1)  # share of pixels counted as a map's "top region" (for IoU)
    real_per_kind: int = Field(1, ge=0)  # held-out images per class and kind (confident-correct, wrong, uncertain)
    synthetic_per_class: int = Field(3, ge=0)  # synthetic images explained per class
    bootstrap_resamples: int = Field(2000, ge=100)  # paired bootstrap of the accuracy difference to real-only


class DomainConfig(Section):
    """Everything one run of one domain needs; saved, resolved, next to every run."""

    name: str  # the domain: names the run store folder
    profile: Profile = "cpu"  # the machine profile layered in
    budget: str | None = None  # the budget layered in, if any (recorded with the run)
    seed: int = Field(20240501, ge=0, lt=2**32)  # one seed for the split, training and sampling (numpy's range)
    runs_root: str = "runs"  # the run store root
    description: str = ""
    data: DataConfig = Field(default_factory=DataConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    synthesis: SynthesisConfig = Field(default_factory=SynthesisConfig)
    classifiers: ClassifierConfig = Field(default_factory=ClassifierConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value or "/" in value or value in {".", ".."}:
            raise ValueError("a non-empty domain name without '/'")
        return value

    @property
    def channels(self) -> int:
        return 1 if self.data.mode == "L" else 3

    def stage_hash(self, *sections: str) -> str:
        """Content hash of the named config sections: a cache key that changes only when they do."""
        payload = {name: self.to_dict()[name] for name in sections}
        return hash_payload(payload)


def resolve_mixed_precision(setting: str, device_type: str) -> Literal["no", "bf16", "fp16"]:
    """``auto`` -> bf16 on a GPU, no on anything else; other settings are returned as they are."""
    if setting == "auto":
        return "bf16" if device_type == "cuda" else "no"
    return typing.cast(Literal["no", "bf16", "fp16"], setting)


# ----------------------------------------------------------------------------------------------
# Loading


def configs_dir() -> Path:
    """The packaged config folder (flows/configs), found the same way installed or in a checkout."""
    return Path(str(resources.files("flows") / "configs"))


def available_domains() -> list[str]:
    return sorted(p.stem for p in (configs_dir() / "domains").glob("*.yaml"))


def available_budgets() -> list[str]:
    return sorted(p.stem for p in (configs_dir() / "budgets").glob("*.yaml"))


def find_config(kind: Literal["domain", "budget"], name: str | Path) -> Path:
    """A packaged config (``flows/configs/<kind>s/<name>.yaml``) by name, or any YAML file by path."""
    path = Path(name)
    if path.suffix in {".yaml", ".yml"}:
        if not path.is_file():
            raise ConfigError(f"{kind}: config file {str(path)!r} does not exist")
        return path
    path = configs_dir() / f"{kind}s" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"{kind}: unknown {kind} {str(name)!r}; available {kind}s: {', '.join(known)} "
                          f"(or pass a path to a YAML file)")
    return path


def load_budget(budget: str | Path) -> tuple[str, dict[str, Any]]:
    """A budget file (name or path): ``(profile, overrides)``."""
    path = find_config("budget", budget)
    doc = read_yaml(path)
    unknown = sorted(set(doc) - {"profile", "overrides"})
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed keys: overrides, profile")
    profile = doc.get("profile", "cpu")
    if profile not in PROFILES:
        raise ConfigError(f"{path}: profile = {profile!r} is not allowed; allowed values: {', '.join(PROFILES)}")
    overrides = doc.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{path}: overrides must be a mapping, got {overrides!r}")
    return profile, overrides


def load_domain_config(domain: str | Path, profile: str | None = None, overrides: dict[str, Any] | None = None,
                       budget: str | Path | None = None) -> DomainConfig:
    """Resolve a domain config through the layers in this module's docstring.

    ``domain`` is a packaged domain name (``brain-mri``) or a path to a YAML file of the same shape;
    ``profile`` defaults to the budget's profile, else ``cpu``; ``budget`` is a budget name or path.
    """
    budget_profile, budget_overrides = load_budget(budget) if budget is not None else (None, {})
    if profile is None:
        profile = budget_profile or "cpu"
    if profile not in PROFILES:
        raise ConfigError(f"profile: unknown profile {profile!r}; allowed values: {', '.join(PROFILES)}")
    if budget_profile is not None and budget_profile != profile:
        raise ConfigError(f"budget {str(budget)!r} is made for profile {budget_profile!r}, not {profile!r}; "
                          f"drop --profile or pass --profile {budget_profile}")
    domain_path = find_config("domain", domain)

    merged: dict[str, Any] = read_yaml(configs_dir() / "profiles" / f"{profile}.yaml")
    domain_doc = read_yaml(domain_path)
    per_profile = domain_doc.pop("profiles", {}) or {}
    if not isinstance(per_profile, dict) or not set(per_profile) <= set(PROFILES):
        raise ConfigError(f"{domain_path}: 'profiles' must map profile names ({', '.join(PROFILES)}) "
                          f"to overrides, got {per_profile!r}")
    for layer in (domain_doc, per_profile.get(profile) or {}, budget_overrides, overrides or {}):
        merged = deep_merge(merged, layer)
    merged["profile"] = profile
    if budget is not None:
        merged["budget"] = Path(budget).stem
    merged.setdefault("name", domain_path.stem)
    return from_dict(DomainConfig, merged, source=str(domain_path))


def load_yaml_text(text: str, source: str = "YAML") -> Any:
    """Bounded YAML (size, depth, alias expansion): pipeline.yaml_bounded."""
    return yaml_bounded.load_yaml_text(text, source)


def read_yaml(path: Path) -> dict[str, Any]:
    doc = yaml_bounded.read_yaml_file(path)
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(doc).__name__}")
    return doc


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``update`` over ``base`` (mappings merge, everything else replaces)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> dict[str, Any]:
    """Turn ``split.cv_folds=3`` into ``{"split": {"cv_folds": 3}}`` (value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {short(text)}: expected KEY=VALUE, for example split.cv_folds=3")
    key, raw = text.split("=", 1)
    value = load_yaml_text(raw, f"override {short(key)}")
    out: dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {short(text)}: expected a dotted key such as split.cv_folds")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


_S = typing.TypeVar("_S", bound=BaseModel)


def from_dict(cls: type[_S], data: Any, source: str = "config") -> _S:
    """Validate ``data`` into ``cls``; any problem is one ConfigError naming the dotted keys."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {format_validation_error(exc, cls)}") from None


# ----------------------------------------------------------------------------------------------
# Error messages: pydantic's errors, phrased with the dotted key and what is allowed


def format_validation_error(exc: ValidationError, cls: type[BaseModel]) -> str:
    messages: list[str] = []
    for error in exc.errors():
        message = _error_message(error, cls)
        if message not in messages:
            messages.append(message)
    return "; ".join(messages)


_TYPE_WORDS = {"int_type": "an integer", "int_from_float": "an integer", "int_parsing": "an integer",
               "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false",
               "bool_parsing": "true or false", "string_type": "a string", "list_type": "a list",
               "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping"}


def _error_message(error: Any, cls: type[BaseModel]) -> str:
    key, owner, field, annotation, rest = _walk(cls, error["loc"])
    kind, value = error["type"], error.get("input")
    if kind == "extra_forbidden":
        where = key.rsplit(".", 1)[0] if "." in key else ""
        allowed = ", ".join(owner.model_fields) if owner is not None else "?"
        return f"unknown key {key}; allowed keys{' under ' + where if where else ''}: {allowed}"
    if kind == "missing":
        return f"missing required key {key}"
    if rest == "[key]":
        return f"{key}: key {short(value)} is not allowed; allowed keys: {_allowed(_dict_key_type(annotation))}"
    if rest is not None:  # a union: report against the whole field
        return f"{key} = {short(value)} is not allowed; allowed values: {_allowed(annotation)}"
    if kind == "literal_error":
        return f"{key} = {short(value)} is not allowed; allowed values: {_allowed(annotation)}"
    if kind in _TYPE_WORDS:
        return f"{key} must be {_TYPE_WORDS[kind]}, got {short(value)}"
    if kind == "value_error":
        problem = error.get("ctx", {}).get("error")
        if isinstance(problem, FieldProblem):
            key = f"{key}.{problem.field}" if key else problem.field
            return f"{key} = {short(problem.value)} is invalid; expected {problem.expected}"
        return f"{key} = {short(value)} is invalid; expected {problem}"
    if owner is not None and field is not None and kind in {"greater_than", "greater_than_equal", "less_than",
                                                            "less_than_equal", "multiple_of"}:
        return f"{key} = {short(value)} is invalid; expected {_range_words(owner, field)}"
    return f"{key} = {short(value)} is invalid: {error['msg']}"


def _walk(cls: type[BaseModel], loc: tuple[Any, ...]) -> tuple[str, Any, str | None, Any, str | None]:
    """Follow ``loc`` through the models: (dotted key, owning model, field, its annotation, unresolved tail)."""
    key, owner, field, current = "", None, None, cls
    for i, part in enumerate(loc):
        if isinstance(current, type) and issubclass(current, BaseModel):
            if part not in current.model_fields:  # an unknown key under this model
                return (f"{key}.{part}" if key else str(part)), current, None, None, None
            owner, field, current = current, str(part), current.model_fields[str(part)].annotation
            key = f"{key}.{part}" if key else str(part)
        elif typing.get_origin(current) is list and isinstance(part, int):
            key, current = f"{key}[{part}]", typing.get_args(current)[0]
        elif typing.get_origin(current) is dict and i + 1 < len(loc) and loc[i + 1] == "[key]":
            return key, owner, field, current, "[key]"
        elif typing.get_origin(current) is dict:
            key, current = f"{key}.{part}", typing.get_args(current)[1]
        else:
            return key, owner, field, current, str(part)
    return key, owner, field, current, None


def _dict_key_type(annotation: Any) -> Any:
    return typing.get_args(annotation)[0] if typing.get_origin(annotation) is dict else annotation


def _allowed(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return ", ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return ", ".join(_allowed(a) for a in typing.get_args(annotation))
    if annotation is bool:
        return "true, false"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _range_words(owner: type[BaseModel], field: str) -> str:
    info = owner.model_fields[field]
    bounds: dict[str, Any] = {}
    for item in info.metadata:  # annotated_types.Ge(ge=1), Lt(lt=1), MultipleOf(multiple_of=8), ...
        for name in ("ge", "gt", "le", "lt", "multiple_of"):
            if getattr(item, name, None) is not None:
                bounds[name] = getattr(item, name)
    base = info.annotation
    integer = base is int
    noun = "an integer" if integer else "a number"
    if "multiple_of" in bounds:
        text = f"a multiple of {bounds['multiple_of']}"
        return text + (f", at least {bounds['ge']}" if "ge" in bounds else "")
    low = ("[", bounds["ge"]) if "ge" in bounds else ("(", bounds["gt"]) if "gt" in bounds else None
    high = (bounds["le"], "]") if "le" in bounds else (bounds["lt"], ")") if "lt" in bounds else None
    null = " or null" if base is not None and type(None) in typing.get_args(base) else ""
    if low and high:
        if low[0] == "(" and high[1] == ")":
            return f"{noun} strictly between {low[1]} and {high[0]}{null}"
        return f"{noun} in {low[0]}{low[1]}, {high[0]}{high[1]}{null}"
    if low:
        return f"{noun} {'>=' if low[0] == '[' else '>'} {low[1]}{null}"
    if high:
        return f"{noun} {'<=' if high[1] == ']' else '<'} {high[0]}{null}"
    return str(base)


def hash_payload(payload: Any) -> str:
    """Stable short content hash of a JSON-able payload (sorted keys), used for cache keys."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
