"""The CNN zoo: one way in (``timm.create_model``) for all eight architectures of the study.

timm has resnet18/50, vgg16/19, densenet121 and mobilenetv2_100 but not AlexNet or GoogLeNet;
those two are registered into timm's registry here, wrapping torchvision's definitions, so the
rest of the project never needs to know which library an architecture came from. Registration
carries a pretrained config (torchvision's ImageNet weights, first conv and classifier names), so
timm's own loader adapts the input channels and drops the head exactly as for its native models.

Minimum input sizes are measured (forward + backward at batch 2), not guessed: AlexNet's three
stride-2 max-pools after a stride-4 stem need 63 px; below that the error comes from deep inside
a pooling layer, so we check before training starts and say what to change.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
import torchvision
from timm.models import build_model_with_cfg, register_model
from torch import nn

from pipeline.config import CLASSIFIER_ARCHITECTURES
from pipeline.errors import ConfigError

ARCHITECTURES: tuple[str, ...] = CLASSIFIER_ARCHITECTURES  # the config validates names against this

# Smallest square input (px) for which forward + backward works (measured by tests/classifiers).
MIN_INPUT_SIZE: dict[str, int] = {
    "resnet18": 8, "resnet50": 8, "vgg16": 32, "vgg19": 32, "alexnet": 63,
    "densenet121": 29, "mobilenetv2_100": 8, "googlenet": 15,
}

_IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}

# Old-style timm default cfgs: register_model picks them up from this module by entrypoint name.
default_cfgs: dict[str, dict[str, Any]] = {
    "alexnet": {"url": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", "num_classes": 1000,
                "input_size": (3, 224, 224), "first_conv": "features.0", "classifier": "classifier.6",
                "license": "bsd-3-clause", "origin_url": "https://pytorch.org/vision", **_IMAGENET},
    "googlenet": {"url": "https://download.pytorch.org/models/googlenet-1378be20.pth", "num_classes": 1000,
                  "input_size": (3, 224, 224), "first_conv": "conv1.conv", "classifier": "fc",
                  "license": "bsd-3-clause", "origin_url": "https://pytorch.org/vision", **_IMAGENET},
}


def _tv_alexnet(num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.5, **_: Any) -> nn.Module:
    model = torchvision.models.alexnet(weights=None, num_classes=num_classes, dropout=drop_rate)
    if in_chans != 3:
        model.features[0] = nn.Conv2d(in_chans, 64, kernel_size=11, stride=4, padding=2)
    return _timm_attributes(model, in_chans, num_classes, num_features=4096)


def _tv_googlenet(num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.2, **_: Any) -> nn.Module:
    # transform_input re-normalises ImageNet RGB inputs; we normalise ourselves, for any channel count.
    model = torchvision.models.googlenet(weights=None, num_classes=num_classes, aux_logits=False,
                                         transform_input=False, init_weights=True, dropout=drop_rate)
    if in_chans != 3:
        model.conv1.conv = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return _timm_attributes(model, in_chans, num_classes, num_features=1024)


def _timm_attributes(model: nn.Module, in_chans: int, num_classes: int, num_features: int) -> nn.Module:
    """The attributes timm reads from its own models (input channels for resolve_input_data_config,
    classes and features for save_for_hf), set on the torchvision definitions."""
    model.in_chans, model.num_classes, model.num_features = in_chans, num_classes, num_features
    return model


def _drop_aux(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """torchvision's GoogLeNet checkpoint holds auxiliary heads the inference model does not have."""
    return {k: v for k, v in state_dict.items() if not k.startswith(("aux1.", "aux2."))}


@register_model
def alexnet(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """AlexNet (torchvision definition) through timm's builder and pretrained loader."""
    return build_model_with_cfg(_tv_alexnet, "alexnet", pretrained, **kwargs)


@register_model
def googlenet(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """GoogLeNet / Inception v1 (torchvision definition, no auxiliary heads) through timm's builder."""
    return build_model_with_cfg(_tv_googlenet, "googlenet", pretrained, pretrained_filter_fn=_drop_aux,
                                **kwargs)


def check_architectures(names: list[str]) -> None:
    """Fail early, listing the valid names, when a configured architecture is not in the zoo."""
    unknown = [n for n in names if n not in ARCHITECTURES]
    if unknown:
        raise ConfigError(f"classifiers.architectures: unknown architecture(s) {', '.join(map(repr, unknown))}; "
                          f"valid names: {', '.join(ARCHITECTURES)}")


def check_input_size(name: str, image_size: int) -> None:
    """Fail before training when ``image_size`` is too small for ``name``, naming the fix."""
    check_architectures([name])
    minimum = MIN_INPUT_SIZE[name]
    if image_size < minimum:
        raise ConfigError(f"classifiers.image_size = {image_size} is too small for {name}: it needs at least "
                          f"{minimum} px input; raise classifiers.image_size or drop {name} from "
                          f"classifiers.architectures")


def create(name: str, in_chans: int, num_classes: int, pretrained: bool = False,
           checkpoint: str | None = None) -> nn.Module:
    """Build one zoo model; ``checkpoint`` is a local weights file used instead of the hub."""
    check_architectures([name])
    kwargs: dict[str, Any] = {"in_chans": in_chans, "num_classes": num_classes}
    if pretrained and checkpoint:
        kwargs["pretrained_cfg_overlay"] = {"file": str(checkpoint)}
    return timm.create_model(name, pretrained=pretrained, **kwargs)

