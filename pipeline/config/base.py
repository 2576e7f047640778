"""The config's vocabulary (allowed values of the enumerated settings) and the base every section model shares."""

from __future__ import annotations

import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from pipeline.errors import short


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
Arm = Literal["synthetic", "real", "real+aug", "real+synthetic", "synthetic->real", "real+aug+synthetic", "balance"]
ARMS: tuple[str, ...] = typing.get_args(Arm)
# the arms a configuration trains when it names none (the two newest are opt-in: each costs k fits per architecture)
DEFAULT_ARMS: tuple[str, ...] = ("synthetic", "real", "real+aug", "real+synthetic", "synthetic->real")
# the arms whose training data holds synthetic images (the answer compares each with real-only and real+aug)
SYNTHETIC_ARMS: tuple[str, ...] = ("synthetic", "real+synthetic", "synthetic->real", "real+aug+synthetic", "balance")
PaddingMode = Literal["zeros", "border", "reflection"]


class FieldProblem(ValueError):
    """Raised by a model-level check about one field: the message names ``field`` under the model's key."""

    def __init__(self, field: str, value: Any, expected: str) -> None:
        super().__init__(f"{field} = {short(value)} is invalid; expected {expected}")
        self.field, self.value, self.expected = field, value, expected


class Section(BaseModel):
    """Base of every config model: unknown keys forbidden, strict types. Build from user data with
    ``from_dict`` (errors become one ConfigError line); direct construction raises pydantic's error."""

    # the docstring under each field is its description in the JSON schema (Prefect shows it)
    model_config = ConfigDict(extra="forbid", strict=True, use_attribute_docstrings=True)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="python")


def resolve_mixed_precision(setting: str, device_type: str) -> Literal["no", "bf16", "fp16"]:
    """``auto`` -> bf16 on a GPU, no on anything else; other settings are returned as they are."""
    if setting == "auto":
        return "bf16" if device_type == "cuda" else "no"
    return typing.cast(Literal["no", "bf16", "fp16"], setting)


