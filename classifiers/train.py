"""One fit: (arm manifest, architecture, fold, config) -> best-epoch checkpoint + metrics file.

``run_fit`` is a pure function of its ``FitSpec`` (content hashes, not paths, go into the key),
writes everything under ``<runs_root>/<domain>/classifier-fits/<key>/`` and returns at once when
that key is already complete. That makes the 8 architectures x k folds x arms fits independent
jobs a scheduler (Prefect, a Dask cluster) can fan out and a killed run can resume.

Training: AdamW, cross-entropy, cosine learning-rate schedule over ``max_epochs``, early stopping
on validation loss with ``patience``, best-epoch weights restored before testing, bf16 autocast on
a GPU, seeds derived from (seed, arm, architecture, fold). A per-fit time budget ends training
after the current batch, keeps the best weights seen so far and records that it did.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from timm.data import resolve_input_data_config
from torch import nn
from tqdm.auto import tqdm

from classifiers import zoo
from classifiers.cv import fold_indices, groups_of
from classifiers.data import BatchMaker, load_tensors
from classifiers.early_stopping import EarlyStopping
from classifiers.metrics import classification_metrics
from classifiers.weights import build_model
from pipeline.config import ClassifierConfig, from_dict, hash_payload
from pipeline.store import RunStore, atomic_save_with, atomic_write_json, read_json

FIT_STAGE = "classifier-fits"
_NOT_IN_KEY = ("architectures", "arms", "checkpoints", "eval_batch_size")


@dataclass(frozen=True)
class FitSpec:
    """Everything one fit depends on; ``key`` hashes the content, paths only say where to read it."""

    domain: str
    arm: str
    architecture: str
    fold: int
    arm_manifest_path: str  # parquet: path, sha256, label, patient_id (canonical order)
    arm_hash: str  # content hash of that manifest (sha256 + label per row)
    test_manifest_path: str  # the held-out real set, same columns
    test_hash: str
    class_names: tuple[str, ...]
    mode: str  # L or RGB
    seed: int
    config: dict[str, Any]  # ClassifierConfig as a dict
    folds: int  # k of the k-fold CV (split.cv_folds)
    augment: bool
    runs_root: str
    cache_dir: str

    @property
    def key(self) -> str:
        config = {k: v for k, v in self.config.items() if k not in _NOT_IN_KEY}
        config["checkpoint"] = (self.config.get("checkpoints") or {}).get(self.architecture)
        return hash_payload({"arm": self.arm, "architecture": self.architecture, "fold": self.fold,
                             "folds": self.folds,
                             "arm_hash": self.arm_hash, "test_hash": self.test_hash,
                             "class_names": list(self.class_names), "mode": self.mode, "seed": self.seed,
                             "config": config, "augment": self.augment, "version": 1})

    def classifier_config(self) -> ClassifierConfig:
        return from_dict(ClassifierConfig, self.config, source="fit spec")


@dataclass
class FitResult:
    key: str
    directory: Path
    metrics: dict[str, Any]
    cached: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def test_probs_path(self) -> Path:
        return self.directory / "test_probs.npy"


def fit_seed(seed: int, *parts: object) -> int:
    return int(hash_payload([seed, *map(str, parts)]), 16) % (2**31 - 1)


def run_fit(spec: FitSpec, progress: bool = False) -> FitResult:
    """Train one (arm, architecture, fold), test it on the held-out set, store and return its metrics."""
    store = RunStore(spec.runs_root, spec.domain)
    key = spec.key
    directory = store.stage_dir(FIT_STAGE, key)
    if store.is_complete(FIT_STAGE, key):
        return FitResult(key, directory, read_json(directory / "metrics.json"), cached=True)

    config = spec.classifier_config()
    zoo.check_input_size(spec.architecture, config.image_size)
    started = time.perf_counter()
    class_names = list(spec.class_names)
    arm = pd.read_parquet(spec.arm_manifest_path)
    test = pd.read_parquet(spec.test_manifest_path)
    images, labels = load_tensors(arm, class_names, spec.mode, config.image_size, spec.cache_dir)
    test_images, test_labels = load_tensors(test, class_names, spec.mode, config.image_size, spec.cache_dir)
    folds = fold_indices(labels.numpy(), groups_of(arm), spec.folds, spec.seed)
    train_idx, val_idx = (torch.from_numpy(i) for i in folds[spec.fold])

    seed = fit_seed(spec.seed, spec.arm, spec.architecture, spec.fold)
    torch.manual_seed(seed)
    channels = images.shape[1]
    model, weights = build_model(spec.architecture, channels, len(class_names), config.pretrained,
                                 config.checkpoints)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    data_config = resolve_input_data_config(model)  # timm: the weights' mean/std, adapted to the model's channels
    mean, std = list(data_config["mean"]), list(data_config["std"])
    batches = BatchMaker(mean, std, config, augment=spec.augment)
    trainer = _Trainer(model, batches, config, device, seed)
    history, stopped_reason = trainer.fit(images, labels, train_idx, val_idx, started, progress,
                                          desc=f"{spec.arm}/{spec.architecture}/fold{spec.fold}")
    model.load_state_dict(trainer.best_state)
    probs = trainer.predict_probs(test_images)
    fit_seconds = time.perf_counter() - started

    best = history[trainer.stopper.best_epoch] if trainer.stopper.best_epoch >= 0 else history[-1]
    metrics: dict[str, Any] = {
        "domain": spec.domain, "arm": spec.arm, "architecture": spec.architecture, "fold": str(spec.fold),
        "fit_key": key, "image_size": config.image_size, "channels": channels,
        "pretrained_requested": weights.requested, "pretrained_used": weights.used,
        "pretrained_source": weights.source, "pretrained_note": weights.note,
        "n_train": int(len(train_idx)), "n_val": int(len(val_idx)), "n_test": int(len(test_labels)),
        "epochs_run": len(history), "best_epoch": int(best["epoch"]), "stopped_reason": stopped_reason,
        "time_budget_hit": stopped_reason == "time_budget",
        "train_loss": best["train_loss"], "train_accuracy": best["train_accuracy"],
        "val_loss": best["val_loss"], "val_accuracy": best["val_accuracy"],
        "fit_seconds": round(fit_seconds, 3), "data_seconds": round(trainer.data_seconds, 3),
        "data_wait_share": round(trainer.data_seconds / max(trainer.train_seconds, 1e-9), 4),
        "device": str(device), "seed": seed,
        **classification_metrics(test_labels.numpy(), probs, class_names),
    }
    atomic_save_with(directory / "model.pt", lambda tmp: torch.save(
        {"state_dict": trainer.best_state, "architecture": spec.architecture, "class_names": class_names,
         "in_chans": channels, "image_size": config.image_size, "mean": mean, "std": std}, tmp))
    atomic_save_with(directory / "test_probs.npy", lambda tmp: _save_npy(tmp, probs))
    atomic_write_json(directory / "history.json", history)
    atomic_write_json(directory / "spec.json", {**dataclasses.asdict(spec), "key": key})
    atomic_write_json(directory / "metrics.json", metrics)
    store.mark_complete(FIT_STAGE, key, {"test_accuracy": metrics["test_accuracy"], "stopped_reason": stopped_reason})
    return FitResult(key, directory, metrics)


class _Trainer:
    """The epoch loop, kept apart from bookkeeping so it reads top to bottom."""

    def __init__(self, model: nn.Module, batches: BatchMaker, config: ClassifierConfig, device: torch.device,
                 seed: int) -> None:
        self.model, self.batches, self.config, self.device = model, batches, config, device
        self.generator = torch.Generator().manual_seed(seed)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate,
                                           weight_decay=config.weight_decay)
        self.scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=config.max_epochs, eta_min=config.learning_rate * 0.01)
            if config.lr_schedule == "cosine" else None)
        self.stopper = EarlyStopping(config.patience, config.min_delta)
        self.best_state: dict[str, torch.Tensor] = copy.deepcopy(model.state_dict())
        self.data_seconds = 0.0
        self.train_seconds = 0.0
        self.amp_dtype = _amp_dtype(config.mixed_precision, device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None

    def _autocast(self) -> Any:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def fit(self, images: torch.Tensor, labels: torch.Tensor, train_idx: torch.Tensor, val_idx: torch.Tensor,
            started: float, progress: bool, desc: str) -> tuple[list[dict[str, Any]], str]:
        history: list[dict[str, Any]] = []
        budget = self.config.time_budget_s
        reason = "max_epochs"
        bar = tqdm(range(self.config.max_epochs), desc=desc, unit="epoch", disable=not progress, leave=False)
        for epoch in bar:
            out_of_time = lambda: budget is not None and time.perf_counter() - started > budget  # noqa: E731
            train_loss, train_acc, interrupted = self._train_epoch(images, labels, train_idx, out_of_time)
            val_loss, val_acc = self._evaluate(images[val_idx], labels[val_idx])
            history.append({"epoch": epoch + 1, "train_loss": train_loss, "train_accuracy": train_acc,
                            "val_loss": val_loss, "val_accuracy": val_acc, "partial_epoch": interrupted,
                            "lr": self.optimizer.param_groups[0]["lr"]})
            if self.stopper.step(val_loss):
                self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
            if self.scheduler is not None:
                self.scheduler.step()
            bar.set_postfix(train_loss=f"{train_loss:.3f}", val_loss=f"{val_loss:.3f}", val_acc=f"{val_acc:.3f}")
            if interrupted or out_of_time():
                reason = "time_budget"
                break
            if self.stopper.should_stop:
                reason = "early_stopping"
                break
        return history, reason

    def _train_epoch(self, images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor,
                     out_of_time: Any) -> tuple[float, float, bool]:
        self.model.train()
        order = index[torch.randperm(len(index), generator=self.generator)]
        size = self.config.batch_size
        starts = list(range(0, len(order), size))
        if len(starts) > 1 and len(order) - starts[-1] == 1:
            starts.pop()  # a batch of one breaks BatchNorm; its image joins the next epoch's shuffle
        total_loss, correct, seen, interrupted = 0.0, 0, 0, False
        for start in starts:
            tick = time.perf_counter()
            batch_idx = order[start:start + size]
            x = self.batches(images[batch_idx], self.generator, train=True).to(self.device, non_blocking=True)
            y = labels[batch_idx].to(self.device, non_blocking=True)
            data_done = time.perf_counter()
            with self._autocast():
                logits = self.model(x)
                loss = F.cross_entropy(logits.float(), y)
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                self.optimizer.step()
            total_loss += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            done = time.perf_counter()
            self.data_seconds += data_done - tick
            self.train_seconds += done - tick
            if out_of_time():
                interrupted = True
                break
        return total_loss / max(seen, 1), correct / max(seen, 1), interrupted

    @torch.no_grad()
    def _logits(self, images: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        chunks = []
        for start in range(0, len(images), self.config.eval_batch_size):
            x = self.batches(images[start:start + self.config.eval_batch_size]).to(self.device)
            with self._autocast():
                chunks.append(self.model(x).float().cpu())
        return torch.cat(chunks)

    def _evaluate(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
        logits = self._logits(images)
        return float(F.cross_entropy(logits, labels)), float((logits.argmax(1) == labels).float().mean())

    def predict_probs(self, images: torch.Tensor) -> np.ndarray:
        return torch.softmax(self._logits(images), dim=1).numpy().astype(np.float64)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a handle, so numpy does not append ".npy" to the temp name
        np.save(handle, array)


def _amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """Mixed precision only on a GPU: bf16 autocast is slower than fp32 on this kind of CPU."""
    if device.type != "cuda" or setting == "no":
        return None
    return torch.float16 if setting == "fp16" else torch.bfloat16
