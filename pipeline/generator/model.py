"""Build the class-conditional UNet: diffusers' UNet2DModel with a label embedding.

The label embedding is added to the timestep embedding (``num_class_embeds``). One extra
embedding, index ``num_classes``, is the "null" class used for classifier-free guidance: during
training a fraction of labels is replaced by it, at sampling time it gives the unconditional
prediction.
"""

from __future__ import annotations

import math
from typing import Any

from diffusers import UNet2DModel

from pipeline.config import GeneratorConfig
from pipeline.errors import ConfigError


def unet_config(config: GeneratorConfig, channels: int, num_classes: int) -> dict[str, Any]:
    """The UNet2DModel keyword arguments for a config (saved in every checkpoint to rebuild the model)."""
    if num_classes < 1:
        raise ConfigError(f"generator: number of classes = {num_classes} is invalid; expected at least 1 class "
                          f"(check data.class_names and the split's training side)")
    if channels not in (1, 3):
        raise ConfigError(f"generator: channels = {channels} is invalid; expected 1 (mode L) or 3 (mode RGB)")
    down = ["AttnDownBlock2D" if attn else "DownBlock2D" for attn in config.attention_levels]
    up = ["AttnUpBlock2D" if attn else "UpBlock2D" for attn in reversed(config.attention_levels)]
    groups = math.gcd(32, *config.block_out_channels)  # GroupNorm groups must divide every level's width
    return {
        "sample_size": config.image_size,
        "in_channels": channels,
        "out_channels": channels,
        "block_out_channels": list(config.block_out_channels),
        "layers_per_block": config.layers_per_block,
        "down_block_types": down,
        "up_block_types": up,
        "norm_num_groups": groups,
        "attention_head_dim": 8,
        "num_class_embeds": num_classes + 1,  # + the null class for classifier-free guidance
    }


def build_unet(config: GeneratorConfig, channels: int, num_classes: int) -> UNet2DModel:
    return UNet2DModel(**unet_config(config, channels, num_classes))


def null_class(model: UNet2DModel) -> int:
    """Index of the unconditional ("null") label: the last class embedding."""
    return int(model.config.num_class_embeds) - 1


def count_parameters(model: UNet2DModel) -> int:
    return sum(p.numel() for p in model.parameters())
