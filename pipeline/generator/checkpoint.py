"""Training checkpoints: written atomically, the last K kept, resumed from the newest readable one.

A checkpoint is one ``torch.save`` file ``ckpt-<step>.pt`` holding model, EMA, optimizer and LR
scheduler states, the step, RNG states, the generator config and the training-data identity
(manifest hash and content hashes). Files are written to a temporary name and moved into place,
so a kill never leaves a half-written ``ckpt-*.pt``; a file damaged some other way (disk full,
copied truncated) is skipped with a warning and the previous one is used.
"""

from __future__ import annotations

import hashlib
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.integrity import file_sha256  # re-exported: callers import it from here
from pipeline.store import atomic_save_with, remove_stale_temporaries

CHECKPOINT_RE = re.compile(r"^ckpt-(\d{8})\.pt$")
REQUIRED_KEYS = ("model", "ema", "optimizer", "lr_scheduler", "step", "rng", "generator_config", "data")


def checkpoint_path(directory: Path, step: int) -> Path:
    return Path(directory) / f"ckpt-{step:08d}.pt"


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint file, oldest first."""
    if not Path(directory).is_dir():
        return []
    found = [(int(m.group(1)), p) for p in Path(directory).iterdir() if (m := CHECKPOINT_RE.match(p.name))]
    return sorted(found)


def rng_state() -> dict[str, Any]:
    """Global RNG states (python, numpy, torch, cuda) in a form torch.load(weights_only=True) accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {"python": random.getstate(), "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
                             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def save_checkpoint(directory: Path, state: dict[str, Any], keep: int) -> Path:
    """Write ``state`` as the checkpoint of ``state['step']`` atomically, then prune: keep this one and the
    ``keep - 1`` newest before it (checkpoints of later steps are left alone: they are not this run's)."""
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(f"checkpoint state lacks {missing}")
    step = int(state["step"])
    target = checkpoint_path(directory, step)
    atomic_save_with(target, lambda tmp: torch.save(state, tmp))
    older = [path for s, path in list_checkpoints(directory) if s < step]  # never a newer one another run wrote
    for old in older[:max(0, len(older) - (keep - 1))]:
        old.unlink(missing_ok=True)
    return target


def guide_path(directory: Path, step: int) -> Path:
    """The autoguidance guide's EMA weights (generator.guide_step); never pruned (not a ``ckpt-`` file)."""
    return Path(directory) / f"guide-{step:08d}.pt"


def save_guide(directory: Path, step: int, ema_state: dict[str, torch.Tensor]) -> Path:
    target = guide_path(directory, step)
    atomic_save_with(target, lambda tmp: torch.save({"step": step, "ema": ema_state}, tmp))
    return target


def load_guide(directory: Path, step: int) -> dict[str, torch.Tensor]:
    """The guide's weights, or a clear error when the run that should have kept them did not."""
    path = guide_path(directory, step)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the autoguidance guide of step {step} was not kept (the generator was "
                                "trained, or continued, past that step without generator.guide_step); retrain it")
    return torch.load(path, map_location="cpu", weights_only=True)["ema"]


def load_latest_checkpoint(directory: Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], Path] | None:
    """The newest checkpoint that loads and has every field; damaged newer ones are skipped with a warning."""
    for step, path in reversed(list_checkpoints(directory)):
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
            missing = [k for k in REQUIRED_KEYS if k not in state]
            if missing:
                raise ValueError(f"missing fields {missing}")
        except Exception as exc:  # truncated zip, bad pickle, wrong content: all mean "unreadable"
            warnings.warn(f"checkpoint {path.name} is unreadable ({type(exc).__name__}: {str(exc)[:120]}); "
                          f"falling back to the previous checkpoint", RuntimeWarning, stacklevel=2)
            continue
        return state, path
    return None


def folder_sha256(path: Path) -> str:
    """Content hash of a folder: every file's relative path and sha256, in sorted order."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()}\0{file_sha256(file)}\n".encode())
    return digest.hexdigest()


__all__ = ["checkpoint_path", "list_checkpoints", "save_checkpoint", "load_latest_checkpoint", "file_sha256",
           "folder_sha256", "remove_stale_temporaries", "rng_state", "set_rng_state"]
