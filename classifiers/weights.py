"""Pretrained weights: ``true | false | "auto"``, local checkpoint files, and an honest offline story.

``auto`` uses pretrained weights when they can be had (a local checkpoint, or the hub when it is
reachable) and otherwise trains from scratch; either way the choice and the reason are returned
so the results table says which it was. ``true`` never falls back: without weights it fails with a
message naming the architecture and the two ways to provide them.

The hub is probed once per process with a short TCP connect: offline, huggingface_hub retries
for ~45 s per model before giving up, which would cost minutes per run for nothing.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from torch import nn

from classifiers import zoo
from pipeline.errors import ConfigError

HUB_HOSTS: tuple[tuple[str, int], ...] = (("huggingface.co", 443), ("download.pytorch.org", 443))


class PretrainedUnavailableError(ConfigError):
    """``pretrained: true`` was asked for but no weights can be loaded."""


@dataclass(frozen=True)
class WeightsChoice:
    """What a fit actually started from, recorded beside its metrics."""

    requested: str  # "true" | "false" | "auto" (a results-table column: one type)
    used: bool  # pretrained weights were loaded
    source: str  # "scratch", "hub", or the local checkpoint path
    note: str  # human-readable reason, empty when nothing surprising happened


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the weight hosts answer at all (cached for the process; HF_HUB_OFFLINE=1 means no)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        return False
    for host, port in HUB_HOSTS:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                return True
        except OSError:
            continue
    return False


def build_model(name: str, in_chans: int, num_classes: int, pretrained: bool | Literal["auto"],
                checkpoints: Mapping[str, str] | None = None) -> tuple[nn.Module, WeightsChoice]:
    """Create ``name`` honouring ``pretrained`` (true, false or "auto"); returns the model and what it got.

    ``checkpoints`` maps architecture names to local weight files (``classifiers.checkpoints``).
    """
    if pretrained not in (True, False, "auto"):
        raise ConfigError(f"classifiers.pretrained = {pretrained!r} is invalid; expected true, false or 'auto'")
    requested = str(pretrained).lower()
    if pretrained is False:
        return zoo.create(name, in_chans, num_classes), WeightsChoice(requested, False, "scratch", "")

    checkpoint = (checkpoints or {}).get(name)
    how_to = (f"put a weights file on disk and set classifiers.checkpoints: {{{name}: /path/to/{name}.pth}} "
              f"(a timm/torchvision state dict), or run where the hub is reachable, or set "
              f"classifiers.pretrained: auto (falls back to training from scratch) or false")
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise PretrainedUnavailableError(f"pretrained weights for {name}: checkpoint file {checkpoint!r} "
                                             f"does not exist; {how_to}")
        model = zoo.create(name, in_chans, num_classes, pretrained=True, checkpoint=checkpoint)
        return model, WeightsChoice(requested, True, str(checkpoint), "")

    if not hub_reachable():
        if pretrained is True:
            raise PretrainedUnavailableError(f"pretrained weights for {name} are unavailable: the weight hub "
                                             f"({', '.join(h for h, _ in HUB_HOSTS)}) is unreachable and no local "
                                             f"checkpoint is configured; {how_to}")
        note = f"pretrained: auto -> {name} trained from scratch (weight hub unreachable, no local checkpoint)"
        return zoo.create(name, in_chans, num_classes), WeightsChoice("auto", False, "scratch", note)
    try:
        model = zoo.create(name, in_chans, num_classes, pretrained=True)
    except Exception as exc:  # network, missing file, corrupted download: all mean "no weights"
        if pretrained is True:
            raise PretrainedUnavailableError(f"pretrained weights for {name} could not be loaded "
                                             f"({type(exc).__name__}: {exc}); {how_to}") from exc
        note = f"pretrained: auto -> {name} trained from scratch (loading failed: {type(exc).__name__}: {exc})"
        return zoo.create(name, in_chans, num_classes), WeightsChoice("auto", False, "scratch", note)
    return model, WeightsChoice(requested, True, "hub", "")
