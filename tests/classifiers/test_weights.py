"""Offline: ``auto`` falls back to scratch and says so; ``true`` fails naming the architecture and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from classifiers import weights, zoo


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    weights.hub_reachable.cache_clear()
    yield
    weights.hub_reachable.cache_clear()


def test_auto_offline_falls_back_and_records_it() -> None:
    model, choice = weights.build_model("resnet18", 1, 4, "auto")
    assert not choice.used and choice.source == "scratch"
    assert "resnet18 trained from scratch" in choice.note and "unreachable" in choice.note
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 4)


def test_true_offline_fails_naming_architecture_and_how_to_fix() -> None:
    with pytest.raises(weights.PretrainedUnavailableError) as info:
        weights.build_model("densenet121", 3, 2, True)
    message = str(info.value)
    assert "densenet121" in message and "classifiers.checkpoints" in message and "unreachable" in message


def test_false_is_silent_scratch() -> None:
    _, choice = weights.build_model("resnet18", 3, 2, False)
    assert choice == weights.WeightsChoice("false", False, "scratch", "")


@pytest.mark.parametrize("name", ["resnet18", "alexnet"])
def test_local_checkpoint_loads_with_channel_and_head_adaptation(tmp_path: Path, name: str) -> None:
    """A 3-channel, 1000-class checkpoint loads into a 1-channel, 4-class model (timm's adaptation)."""
    source = zoo.create(name, in_chans=3, num_classes=1000)
    path = tmp_path / f"{name}.pth"
    torch.save(source.state_dict(), path)
    model, choice = weights.build_model(name, 1, 4, True, {name: str(path)})
    assert choice.used and choice.source == str(path)
    first = dict(model.named_parameters())[zoo.create(name, 1, 4).pretrained_cfg["first_conv"] + ".weight"]
    source_first = dict(source.named_parameters())[source.pretrained_cfg["first_conv"] + ".weight"]
    assert torch.allclose(first, source_first.sum(dim=1, keepdim=True), atol=1e-5)


def test_missing_checkpoint_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(weights.PretrainedUnavailableError, match="resnet50.*does not exist"):
        weights.build_model("resnet50", 1, 2, "auto", {"resnet50": str(tmp_path / "nope.pth")})
