"""Classifier settings (classifiers/): the panel, the arms, the step budget, MONAI augmentation of the real arm."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config.base import (DEFAULT_ARMS, Architecture, Arm, CLASSIFIER_ARCHITECTURES, FieldProblem,
                                  MixedPrecision, PaddingMode, Section)


class AugmentConfig(Section):
    """MONAI augmentation of one domain (pipeline/augment.py builds it; the real+aug arm uses it).

    Spatial: random flips (only where the anatomy allows), one affine resample per image (rotation,
    zoom per axis, shift). Intensity (on [0, 1] images): bias field, gamma contrast, Gaussian noise,
    each applied with probability ``intensity_prob``. 0 (or gamma [1, 1]) switches a transform off.
    """

    hflip: bool = True
    """left-right flips (p = 0.5)"""
    vflip: bool = False
    """up-down flips (p = 0.5)"""
    rotation_deg: float = Field(15.0, ge=0, le=180)
    """max rotation either way"""
    scale: float = Field(0.1, ge=0, lt=0.5)
    """max relative zoom in or out (per axis)"""
    translate: float = Field(0.05, ge=0, lt=0.5)
    """max shift as a fraction of the image side"""
    padding_mode: PaddingMode = "zeros"
    """how the affine fills pixels from outside the image"""
    bias_field: float = Field(0.1, ge=0)
    """max coefficient of MONAI's RandBiasField (degree 3); 0 = off"""
    contrast_gamma: list[float] = [0.8, 1.25]
    """RandAdjustContrast gamma range; [1, 1] = off"""
    noise_std: float = Field(0.02, ge=0)
    """max std of additive Gaussian noise (on [0, 1] images); 0 = off"""
    intensity_prob: float = Field(0.3, ge=0, le=1)
    """probability of each intensity transform per image"""

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

    architectures: list[Architecture] = list(CLASSIFIER_ARCHITECTURES)
    """the CNN panel (timm names)"""
    arms: list[Arm] = list(DEFAULT_ARMS)
    """training sets, each evaluated on the held-out real 80%: synthetic, real, real+aug (MONAI), real+synthetic,
    synthetic->real (pretrain, fine-tune), and opt-in real+aug+synthetic (synthetic images on top of augmented
    real ones) and balance (real images plus synthetic ones only for the classes below the largest, up to it)"""
    pretrained: bool | Literal["auto"] = "auto"
    """auto: pretrained weights when they can be had, else scratch"""
    checkpoints: dict[Architecture, str] = {}
    """local weights per architecture: {resnet18: /w/r18.pth}"""
    image_size: int = Field(224, ge=16)
    budget: Literal["steps", "epochs"] = "steps"
    max_steps: int = Field(3000, ge=1)
    """optimizer steps per fit, the same for every arm (budget: steps)"""
    min_steps: int = Field(1000, ge=0)
    """early stopping may not end a fit before this many steps"""
    eval_every_steps: int = Field(100, ge=1)
    """validation (early stopping, model selection) cadence"""
    patience_steps: int = Field(500, ge=1)
    """steps without a validation-loss improvement before stopping"""
    max_epochs: int = Field(50, ge=1)
    """budget: epochs only"""
    patience: int = Field(5, ge=1)
    """budget: epochs only: epochs without a validation-loss improvement"""
    min_delta: float = Field(0.0, ge=0)
    """an improvement must beat the best select_on value by more than this"""
    select_on: Literal["val_loss", "val_accuracy"] = "val_loss"
    """model selection and early stopping on the real fold: val_loss (lowest cross-entropy) or val_accuracy
    (highest accuracy, ties broken by the lower loss)"""
    primary_architecture: Architecture | None = None
    """the architecture whose fold ensemble answers for every arm (a planned comparison); null = each arm's
    architecture is chosen on validation by select_on (classifiers/choice.py), never on held-out results"""
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    """training loss only; validation loss stays plain"""
    validation: Literal["real", "arm"] = "real"
    """real: fold k of the real 20% sample validates every arm; arm: the arm's own fold (the old protocol)"""
    pretrain_fraction: float = Field(0.5, gt=0, lt=1)
    """synthetic->real: share of the budget for pretraining"""
    batch_size: int = Field(64, ge=2)
    eval_batch_size: int = Field(128, ge=1)
    learning_rate: float = Field(1e-4, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    lr_schedule: Literal["cosine", "none"] = "cosine"
    """cosine: anneal to 1% over the fit's budget"""
    time_budget_s: float | None = Field(None, gt=0)
    """per fit; a reported safety net, never a budget"""
    mixed_precision: MixedPrecision = "auto"
    """auto: bf16 autocast on a GPU, fp32 on a CPU"""
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    """the real+aug arm (MONAI)"""

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


