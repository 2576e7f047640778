"""Every architecture builds through timm for 1 and 3 channels, trains one step; names and sizes are checked."""

from __future__ import annotations

import pytest
import timm
import torch

from classifiers import zoo
from pipeline.config import load_domain_config
from pipeline.errors import ConfigError


# The cpu-profile sizes (demo 32 px, real domains 64 px); an architecture is tested at those it supports.
PROFILE_SIZES = sorted({load_domain_config(d, "cpu").classifiers.image_size for d in ("demo", "covid-ct")})


@pytest.mark.parametrize("name", zoo.ARCHITECTURES)
@pytest.mark.parametrize("channels", [1, 3])
def test_builds_and_trains_one_step(name: str, channels: int) -> None:
    for size in [s for s in PROFILE_SIZES if s >= zoo.MIN_INPUT_SIZE[name]]:
        _one_step(name, channels, size)


def _one_step(name: str, channels: int, size: int) -> None:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, in_chans=channels, num_classes=3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(2, channels, size, size), torch.tensor([0, 2])
    model.train()
    logits = model(x)
    assert logits.shape == (2, 3)
    loss = torch.nn.functional.cross_entropy(logits, y)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)


def test_alexnet_and_googlenet_are_in_timms_registry() -> None:
    assert {"alexnet", "googlenet"} <= set(timm.list_models(["alexnet", "googlenet"]))
    model = zoo.create("googlenet", in_chans=1, num_classes=2)
    assert model.conv1.conv.in_channels == 1 and model.fc.out_features == 2
    assert model.pretrained_cfg["first_conv"] == "conv1.conv"


def test_unknown_architecture_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match="valid names: resnet18, resnet50"):
        zoo.check_architectures(["resnet18", "lenet5"])
    with pytest.raises(ConfigError, match="classifiers.architectures"):
        load_domain_config("demo", "cpu", {"classifiers": {"architectures": ["lenet5"]}})


def test_input_size_checked_before_training() -> None:
    with pytest.raises(ConfigError, match="too small for alexnet: it needs at least 63 px"):
        zoo.check_input_size("alexnet", 32)
    zoo.check_input_size("alexnet", 64)
    zoo.check_input_size("googlenet", 32)


def test_min_input_sizes_are_tight() -> None:
    """The table is measured: one pixel less fails for the pooling-limited architectures."""
    for name in ("alexnet", "vgg16", "densenet121"):
        model = zoo.create(name, in_chans=1, num_classes=2).train()
        minimum = zoo.MIN_INPUT_SIZE[name]
        model(torch.randn(2, 1, minimum, minimum))
        with pytest.raises(RuntimeError):
            model(torch.randn(2, 1, minimum - 1, minimum - 1))
