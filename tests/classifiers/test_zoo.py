"""Every architecture builds through timm for 1 and 3 channels, trains one step; names and sizes are checked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from timm.data import resolve_input_data_config

from classifiers import weights, zoo
from classifiers.data import BatchMaker
from pipeline.config import ClassifierConfig, load_domain_config
from pipeline.errors import ConfigError


# The cpu-profile sizes (demo 32 px, real domains 64 px); an architecture is tested at those it supports.
REPO = Path(__file__).resolve().parents[2]
PROFILE_SIZES = sorted({load_domain_config(d, "cpu").classifiers.image_size for d in ("demo", "covid-ct")})


# The model family each zoo name must build (timm's own classes, torchvision's for the two we register).
FAMILY = {"resnet18": "ResNet", "resnet50": "ResNet", "vgg16": "VGG", "vgg19": "VGG", "alexnet": "AlexNet",
          "densenet121": "DenseNet", "mobilenetv2_100": "EfficientNet", "googlenet": "GoogLeNet"}


@pytest.mark.parametrize("name", zoo.ARCHITECTURES)
@pytest.mark.parametrize("channels", [1, 3])
def test_builds_and_trains_one_step(name: str, channels: int) -> None:
    """Built the way training builds it (weights.build_model -> zoo.create -> timm.create_model)."""
    torch.manual_seed(0)
    model, choice = weights.build_model(name, channels, 3, False)
    assert not choice.used and type(model).__name__ == FAMILY[name]
    assert model.pretrained_cfg["architecture"] == name  # resolved through timm's registry, by this name
    first_conv = model.get_submodule(model.pretrained_cfg["first_conv"])
    assert first_conv.in_channels == channels
    data = resolve_input_data_config(model)  # the normalisation training uses, one value per channel
    assert len(data["mean"]) == len(data["std"]) == channels
    for size in [s for s in PROFILE_SIZES if s >= zoo.MIN_INPUT_SIZE[name]]:
        _one_step(model, channels, size, data)


def _one_step(model: torch.nn.Module, channels: int, size: int, data: dict) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = BatchMaker(list(data["mean"]), list(data["std"]), ClassifierConfig(), augment=False)
    x = batches(torch.randint(0, 256, (2, channels, size, size), dtype=torch.uint8))
    y = torch.tensor([0, 2])
    model.train()
    logits = model(x)
    assert logits.shape == (2, 3)
    loss = torch.nn.functional.cross_entropy(logits, y)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)


def test_importing_classifiers_registers_alexnet_and_googlenet_in_timm() -> None:
    """In a fresh process: ``import classifiers`` alone (not classifiers.zoo) makes timm know both."""
    script = ("import classifiers, timm\n"
              "for name in ('alexnet', 'googlenet'):\n"
              "    m = timm.create_model(name, num_classes=2, in_chans=1)\n"
              "    print(name, type(m).__name__, m.pretrained_cfg['architecture'])\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:2] == ["alexnet AlexNet alexnet", "googlenet GoogLeNet googlenet"]


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
