"""Pretrained weights: ``true | false | "auto"``, local checkpoint files, and an honest offline story.

``auto`` uses pretrained weights when they can be had (a local checkpoint, or the hub when it is
reachable) and otherwise trains from scratch; either way the choice and the reason are returned
so the results table says which it was. ``true`` never falls back: without weights it fails with a
message naming the architecture and the two ways to provide them.

``resolve_weights`` makes that choice without building the model the fit trains; its ``key``
("scratch", "hub:<weights id>" or "file:<sha256 of the checkpoint>") goes into every fit key, so a
fit trained from scratch is never served where ImageNet weights were had, nor one warm-started
from a checkpoint file whose bytes have changed since. ``build_model`` builds what was resolved.

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
from pipeline.integrity import file_sha256

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
    digest: str = ""  # what was resolved: the hub's weights id, or the checkpoint file's sha256

    @property
    def key(self) -> str:
        """The weights a fit starts from, as fit keys hash it (content, never a path)."""
        if not self.used:
            return "scratch"
        return f"hub:{self.digest}" if self.source == "hub" else f"file:{self.digest}"


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


@functools.lru_cache(maxsize=None)
def hub_load_error(name: str) -> str | None:
    """Why ``name``'s hub weights do not load (None: they do); tried once per process and architecture."""
    try:
        zoo.create(name, 3, 2, pretrained=True)
    except Exception as exc:  # network, missing file, corrupted download: all mean "no weights"
        return f"{type(exc).__name__}: {exc}"
    return None


def hub_weights_id(name: str) -> str:
    """The hub weights timm loads for ``name`` (its default pretrained tag: a timm upgrade may change it)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    return (cfg.hf_hub_id or cfg.url or name) if cfg is not None else name


def resolve_weights(name: str, pretrained: bool | Literal["auto"], checkpoints: Mapping[str, str] | None = None
                    ) -> WeightsChoice:
    """What a fit of ``name`` starts from, decided before it is built; its ``key`` goes into fit keys."""
    if pretrained not in (True, False, "auto"):
        raise ConfigError(f"classifiers.pretrained = {pretrained!r} is invalid; expected true, false or 'auto'")
    requested = str(pretrained).lower()
    if pretrained is False:
        return WeightsChoice(requested, False, "scratch", "")

    checkpoint = (checkpoints or {}).get(name)
    how_to = (f"put a weights file on disk and set classifiers.checkpoints: {{{name}: /path/to/{name}.pth}} "
              f"(a timm/torchvision state dict), or run where the hub is reachable, or set "
              f"classifiers.pretrained: auto (falls back to training from scratch) or false")
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise PretrainedUnavailableError(f"pretrained weights for {name}: checkpoint file {checkpoint!r} "
                                             f"does not exist; {how_to}")
        return WeightsChoice(requested, True, str(checkpoint), "", file_sha256(checkpoint))

    if not hub_reachable():
        if pretrained is True:
            raise PretrainedUnavailableError(f"pretrained weights for {name} are unavailable: the weight hub "
                                             f"({', '.join(h for h, _ in HUB_HOSTS)}) is unreachable and no local "
                                             f"checkpoint is configured; {how_to}")
        note = f"pretrained: auto -> {name} trained from scratch (weight hub unreachable, no local checkpoint)"
        return WeightsChoice("auto", False, "scratch", note)
    error = hub_load_error(name)
    if error is not None:
        if pretrained is True:
            raise PretrainedUnavailableError(f"pretrained weights for {name} could not be loaded ({error}); {how_to}")
        return WeightsChoice("auto", False, "scratch", f"pretrained: auto -> {name} trained from scratch "
                                                       f"(loading failed: {error})")
    return WeightsChoice(requested, True, "hub", "", hub_weights_id(name))


def build_model(name: str, in_chans: int, num_classes: int, pretrained: bool | Literal["auto"],
                checkpoints: Mapping[str, str] | None = None, expect: str | None = None
                ) -> tuple[nn.Module, WeightsChoice]:
    """Create ``name`` honouring ``pretrained`` (true, false or "auto"); returns the model and what it got.

    ``checkpoints`` maps architecture names to local weight files (``classifiers.checkpoints``).
    ``expect``: the weights key the fit was planned (and keyed) with; anything else is an error, so a
    fit never stores one start under another's key.
    """
    choice = resolve_weights(name, pretrained, checkpoints)
    if expect is not None and choice.key != expect:
        raise PretrainedUnavailableError(f"{name}: the weights resolved to {choice.key} here, but the fit was "
                                         f"planned with {expect} (a checkpoint file changed, or the weight hub "
                                         f"is reachable on one machine and not the other); run again")
    if not choice.used:
        return zoo.create(name, in_chans, num_classes), choice
    if choice.source != "hub":
        return zoo.create(name, in_chans, num_classes, pretrained=True, checkpoint=choice.source), choice
    try:
        return zoo.create(name, in_chans, num_classes, pretrained=True), choice
    except Exception as exc:  # resolved as loadable a moment ago: never fall back under a pretrained key
        raise PretrainedUnavailableError(f"pretrained weights for {name} could not be loaded "
                                         f"({type(exc).__name__}: {exc}); run again, or set classifiers.pretrained: "
                                         f"false") from exc
