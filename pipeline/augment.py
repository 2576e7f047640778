"""Image augmentation from MONAI's medical transforms, built in one place for every stage that augments.

``BatchAugment(config)`` turns an ``AugmentConfig`` into a callable on a float batch (N, C, H, W):

    spatial     RandFlip (left-right / up-down, p = 0.5 each, only where the config allows it) and one
                RandAffine resample per image (rotation, isotropic zoom, shift)
    intensity   RandBiasField, RandAdjustContrast (gamma), RandGaussianNoise, each with probability
                ``intensity_prob``; these expect images in [0, 1] and the result is clamped to
                ``value_range``

The classifiers' real+aug arm uses it on [0, 1] batches; the generator uses the same builder for its
light affine augmentation (on [-1, 1], spatial transforms only). Randomness comes from the torch
generator the caller passes: one draw seeds MONAI's random state for the batch, so a batch is a pure
function of that generator's state (a fit, or a resumed generator step, sees the same augmentation).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from monai.transforms import (Compose, RandAdjustContrast, RandAffine, RandBiasField, RandFlip,
                              RandGaussianNoise)

from pipeline.config import AugmentConfig

_SPATIAL_PADDING = {"zeros": "zeros", "border": "border", "reflection": "reflection"}


def has_intensity(config: AugmentConfig) -> bool:
    return config.intensity_prob > 0 and (config.bias_field > 0 or config.noise_std > 0
                                          or list(config.contrast_gamma) != [1.0, 1.0])


def build_transforms(config: AugmentConfig, side: int) -> Compose | None:
    """The per-image MONAI pipeline for images of ``side`` pixels (channel first), or None when all is off."""
    steps: list[Any] = []
    if config.hflip:
        steps.append(RandFlip(prob=0.5, spatial_axis=1))  # (C, H, W): spatial axis 1 is W, left-right
    if config.vflip:
        steps.append(RandFlip(prob=0.5, spatial_axis=0))
    if config.rotation_deg or config.scale or config.translate:
        shift = config.translate * side
        steps.append(RandAffine(prob=1.0, rotate_range=math.radians(config.rotation_deg),
                                scale_range=config.scale, translate_range=(shift, shift),
                                mode="bilinear", padding_mode=_SPATIAL_PADDING[config.padding_mode]))
    p = config.intensity_prob
    if p > 0 and config.bias_field > 0:
        steps.append(RandBiasField(degree=3, coeff_range=(0.0, config.bias_field), prob=p))
    if p > 0 and list(config.contrast_gamma) != [1.0, 1.0]:
        steps.append(RandAdjustContrast(prob=p, gamma=tuple(config.contrast_gamma)))
    if p > 0 and config.noise_std > 0:
        steps.append(RandGaussianNoise(prob=p, mean=0.0, std=config.noise_std))
    if not steps:
        return None
    return Compose(steps)


class BatchAugment:
    """Apply the configured MONAI transforms image by image; deterministic for a torch generator's state."""

    def __init__(self, config: AugmentConfig, value_range: tuple[float, float] = (0.0, 1.0)) -> None:
        self.config = config
        self.value_range = value_range
        self.clamp = has_intensity(config)
        self._by_side: dict[int, Compose | None] = {}

    def transforms(self, side: int) -> Compose | None:
        if side not in self._by_side:
            self._by_side[side] = build_transforms(self.config, side)
        return self._by_side[side]

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        pipeline = self.transforms(x.shape[-1])
        if pipeline is None:
            return x
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        pipeline.set_random_state(seed=seed)
        device, dtype = x.device, x.dtype
        images = x.detach().to("cpu", torch.float32)
        out = torch.stack([_plain(pipeline(image)) for image in images])
        if self.clamp:
            out = out.clamp_(*self.value_range)
        return out.to(device=device, dtype=dtype)


def _plain(value: Any) -> torch.Tensor:
    """MONAI returns MetaTensors; keep plain tensors so nothing downstream carries metadata."""
    return value.as_tensor() if hasattr(value, "as_tensor") else torch.as_tensor(value)
