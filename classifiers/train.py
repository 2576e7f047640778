"""One fit: (arm manifest, architecture, fold, config) -> selected checkpoint + metrics + fit record.

``run_fit`` is a pure function of its ``FitSpec`` (content hashes, not paths, go into the key),
writes everything under ``<runs_root>/<domain>/classifier-fits/<key>/`` and returns at once when
that key is already complete. That makes the architectures x folds x arms fits independent jobs a
scheduler (Prefect, a Dask cluster) can fan out and a killed run can resume.

A fit is a few named steps (``run_fit`` reads top to bottom):

    load_fit_data   the arm's pool, fold k's training rows and validation rows (pipeline.folds.fold_plan);
                    decoded once and cached. A fit never reads a held-out image: scoring frozen fits on the
                    held-out set is classifiers.scoring's job, the one place that reads them
    plan_phases     the step budget: ``budget: steps`` gives every arm ``max_steps`` optimizer steps;
                    ``budget: epochs`` (old) gives ``max_epochs`` passes over the arm's own rows;
                    ``synthetic->real`` splits the one budget into a synthetic pretrain and a real fine-tune
    Trainer.run     AdamW, cross-entropy, cosine schedule over each phase, validation every
                    ``eval_every_steps`` on the validation rows (fold k of the REAL sample by default),
                    early stopping after ``min_steps`` and ``patience_steps`` without improvement (the
                    floor counted from each selecting phase's start, in proportion to its share of the
                    budget), the best validated weights restored; bf16 autocast on a GPU
    save_fit        model.pt, history.json, record.json (which rows trained and validated, by index and
                    content hash; each phase's steps), metrics.json (validation only)

``time_budget_s`` is only a safety net: it ends a fit after the current step, keeps the best
weights seen so far and records ``time_budget_hit``; results never depend on it otherwise.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator
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
from pipeline.folds import FoldPlan, fold_plan
from classifiers.data import PRETRAIN_FINETUNE, BatchMaker, load_tensors
from classifiers.early_stopping import EarlyStopping
from classifiers.weights import WeightsChoice, build_model
from pipeline.config import ClassifierConfig, from_dict, hash_payload
from pipeline.progress import Progress
from pipeline.store import RunStore, atomic_save_with, atomic_write_json, read_json

FIT_STAGE = "classifier-fits"
_NOT_IN_KEY = ("architectures", "arms", "checkpoints", "eval_batch_size", "primary_architecture")
_STEP_BUDGET_KEYS = ("max_steps", "min_steps", "eval_every_steps", "patience_steps")
_EPOCH_BUDGET_KEYS = ("max_epochs", "patience")
# options added after fits were cached: at these values they change nothing, so they stay out of the key
# and an upgrade does not retrain every cached fit
_NEUTRAL_DEFAULTS: dict[str, Any] = {"select_on": "val_loss", "label_smoothing": 0.0}


@dataclass(frozen=True)
class FitSpec:
    """Everything one fit depends on; ``key`` hashes the content, paths only say where to read it."""

    domain: str
    arm: str
    architecture: str
    fold: int
    arm_manifest_path: str  # parquet: path, sha256, label, patient_id, source (canonical order)
    arm_hash: str  # content hash of that manifest (sha256 + label per row)
    real_manifest_path: str  # the real 20% sample, canonical order: its folds validate every arm
    real_hash: str
    class_names: tuple[str, ...]
    mode: str  # L or RGB
    seed: int
    config: dict[str, Any]  # ClassifierConfig as a dict
    folds: int  # k of the k-fold CV (split.cv_folds): the real sample's folds validate every arm
    fold_hash: str  # pipeline.folds.FoldPlan.digest: which rows train and validate (patients, groups, algorithm)
    weights: str  # classifiers.weights.WeightsChoice.key: scratch, hub weights or a checkpoint's sha256
    augment: bool
    runs_root: str
    cache_dir: str

    @property
    def key(self) -> str:
        return hash_payload({"arm": self.arm, "architecture": self.architecture, "fold": self.fold,
                             "folds": self.folds, "arm_hash": self.arm_hash, "real_hash": self.real_hash,
                             "class_names": list(self.class_names), "mode": self.mode, "seed": self.seed,
                             "config": self._key_config(), "augment": self.augment, "fold_hash": self.fold_hash,
                             "weights": self.weights, "version": 4})

    def _key_config(self) -> dict[str, Any]:
        """The settings this fit's result depends on (others change, the fit is reused)."""
        config = {k: v for k, v in self.config.items() if k not in _NOT_IN_KEY}  # checkpoints: in ``weights``
        unused = _EPOCH_BUDGET_KEYS if config.get("budget", "steps") == "steps" else _STEP_BUDGET_KEYS
        for name in unused:
            config.pop(name, None)
        if not self.augment:
            config.pop("augment", None)
        if self.arm not in PRETRAIN_FINETUNE:
            config.pop("pretrain_fraction", None)
        for name, neutral in _NEUTRAL_DEFAULTS.items():
            if config.get(name, neutral) == neutral:
                config.pop(name, None)
        return config

    def classifier_config(self) -> ClassifierConfig:
        return from_dict(ClassifierConfig, self.config, source="fit spec")


@dataclass
class FitResult:
    key: str
    directory: Path
    metrics: dict[str, Any]
    cached: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class FitData:
    """The tensors of one fit: the arm's pool, which rows train, the validation set (never a held-out image)."""

    images: torch.Tensor  # uint8, the arm's pool
    labels: torch.Tensor
    sources: np.ndarray  # "real" / "synthetic" per pool row
    plan: FoldPlan
    val_images: torch.Tensor
    val_labels: torch.Tensor
    val_sha256: list[str]
    val_sources: list[str]


@dataclass(frozen=True)
class Phase:
    """A stretch of the fit's step budget on one set of pool rows."""

    name: str  # "train", or "pretrain" then "finetune"
    index: torch.Tensor  # pool rows it trains on
    steps: int  # its share of the budget (optimizer steps)
    eval_every: int
    patience: int  # in steps
    selects: bool  # validates into early stopping and model selection (pretrain only reports)
    steps_per_epoch: int
    epochs: int | None  # budget: epochs: the cosine schedule steps once per epoch, as it always did


def fit_seed(seed: int, *parts: object) -> int:
    return int(hash_payload([seed, *map(str, parts)]), 16) % (2**31 - 1)


def run_fit(spec: FitSpec, progress: bool = False) -> FitResult:
    """Train one (arm, architecture, fold) and select its step on validation; store and return its metrics."""
    store = RunStore(spec.runs_root, spec.domain)
    key = spec.key
    directory = store.stage_dir(FIT_STAGE, key)
    if store.is_complete(FIT_STAGE, key):
        return FitResult(key, directory, read_json(directory / "metrics.json"), cached=True)

    config = spec.classifier_config()
    zoo.check_input_size(spec.architecture, config.image_size)
    started = time.perf_counter()
    data = load_fit_data(spec, config)
    phases = plan_phases(spec.arm, config, data)
    seed = fit_seed(spec.seed, spec.arm, spec.architecture, spec.fold)
    torch.manual_seed(seed)
    channels = data.images.shape[1]
    model, weights = build_model(spec.architecture, channels, len(spec.class_names), config.pretrained,
                                 config.checkpoints, expect=spec.weights)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    data_config = resolve_input_data_config(model)  # timm: the weights' mean/std, adapted to the model's channels
    mean, std = list(data_config["mean"]), list(data_config["std"])
    trainer = Trainer(model, BatchMaker(mean, std, config, augment=spec.augment), config, device, seed)
    trainer.run(phases, data, started, progress, desc=f"{spec.arm}/{spec.architecture}/fold{spec.fold}")
    model.load_state_dict(trainer.best_state)
    metrics = fit_metrics(spec, config, data, phases, trainer, weights, key, device, time.perf_counter() - started)
    save_fit(directory, spec, key, trainer, data, phases, metrics, (mean, std))
    store.mark_complete(FIT_STAGE, key, {"val_loss": metrics["val_loss"], "val_accuracy": metrics["val_accuracy"],
                                         "stopped_reason": metrics["stopped_reason"]})
    return FitResult(key, directory, metrics)


def load_fit_data(spec: FitSpec, config: ClassifierConfig) -> FitData:
    """Decode (cached) the arm's pool and the real sample; pick fold k's rows."""
    class_names = list(spec.class_names)
    arm = pd.read_parquet(spec.arm_manifest_path)
    real = pd.read_parquet(spec.real_manifest_path)
    images, labels = load_tensors(arm, class_names, spec.mode, config.image_size, spec.cache_dir)
    plan = fold_plan(arm, real, spec.fold, spec.folds, spec.seed, config.validation)
    if plan.digest != spec.fold_hash:
        raise RuntimeError(f"fold {spec.fold} of {spec.arm} differs from the one its key was planned with; run again")
    val_table = real if plan.val_table == "real" else arm
    if plan.val_table == "real":
        pool_images, pool_labels = load_tensors(real, class_names, spec.mode, config.image_size, spec.cache_dir)
    else:
        pool_images, pool_labels = images, labels
    val = torch.from_numpy(plan.val)
    return FitData(images=images, labels=labels, sources=arm["source"].astype(str).to_numpy(), plan=plan,
                   val_images=pool_images[val], val_labels=pool_labels[val],
                   val_sha256=val_table["sha256"].iloc[plan.val].astype(str).tolist(),
                   val_sources=val_table["source"].iloc[plan.val].astype(str).tolist())


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Batches in one pass over n rows (a last batch of one is dropped: it breaks BatchNorm)."""
    batches = math.ceil(n / batch_size)
    return batches - 1 if batches > 1 and n % batch_size == 1 else batches


def plan_phases(arm: str, config: ClassifierConfig, data: FitData) -> list[Phase]:
    """The fit's budget as phases: one for most arms, synthetic pretrain + real fine-tune for synthetic->real."""
    train = torch.from_numpy(data.plan.train)
    if arm in PRETRAIN_FINETUNE:
        sources = data.sources[data.plan.train]
        parts = [("pretrain", train[torch.from_numpy(sources == "synthetic")], config.pretrain_fraction, False),
                 ("finetune", train[torch.from_numpy(sources == "real")], 1.0 - config.pretrain_fraction, True)]
    else:
        parts = [("train", train, 1.0, True)]
    phases = []
    for name, index, share, selects in parts:
        if len(index) == 0:
            raise ValueError(f"arm {arm!r}, phase {name!r}: no training rows in this fold")
        spe = steps_per_epoch(len(index), config.batch_size)
        if config.budget == "epochs":
            epochs = max(1, round(config.max_epochs * share))
            phases.append(Phase(name, index, epochs * spe, spe, config.patience * spe, selects, spe, epochs))
        else:
            phases.append(Phase(name, index, 0, config.eval_every_steps, config.patience_steps, selects, spe, None))
    if config.budget == "steps":  # one budget for every arm; a split one is split, never stretched
        first = round(config.max_steps * config.pretrain_fraction) if len(phases) == 2 else config.max_steps
        first = min(max(first, 1), config.max_steps - (len(phases) - 1))
        shares = [first, config.max_steps - first][:len(phases)]
        phases = [dataclasses.replace(p, steps=s) for p, s in zip(phases, shares)]
    return phases


def epoch_batches(index: torch.Tensor, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless batches: consecutive slices of a fresh permutation per pass (a last batch of one is skipped)."""
    while True:
        order = index[torch.randperm(len(index), generator=generator)]
        for b in range(steps_per_epoch(len(order), batch_size)):
            yield order[b * batch_size:(b + 1) * batch_size]


class Trainer:
    """The step loop over a fit's phases, kept apart from bookkeeping so it reads top to bottom."""

    def __init__(self, model: nn.Module, batches: BatchMaker, config: ClassifierConfig, device: torch.device,
                 seed: int) -> None:
        self.model, self.batches, self.config, self.device = model, batches, config, device
        self.generator = torch.Generator().manual_seed(seed)
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_step = -1
        self.history: list[dict[str, Any]] = []
        self.phase_steps: dict[str, int] = {}
        self.step = 0
        self.samples_seen = 0
        self.stopped_reason = "max_epochs" if config.budget == "epochs" else "max_steps"
        self.data_seconds = 0.0
        self.train_seconds = 0.0
        self.amp_dtype = _amp_dtype(config.mixed_precision, device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None

    def _autocast(self) -> Any:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def run(self, phases: list[Phase], data: FitData, started: float, progress: bool, desc: str) -> None:
        budget = self.config.time_budget_s
        out_of_time = lambda: budget is not None and time.perf_counter() - started > budget  # noqa: E731
        bar = tqdm(total=sum(p.steps for p in phases), desc=desc, unit="step", disable=not progress, leave=False)
        self.report = Progress(f"fit {desc}", sum(p.steps for p in phases))
        for phase in phases:
            reason = self._run_phase(phase, data, out_of_time, bar)
            if reason != "done":
                self.stopped_reason = reason
                break
        bar.close()
        self.report.finish(None if self.step >= self.report.total else self.stopped_reason)
        if self.best_state is None:  # nothing validated into selection (a safety-net stop in pretraining)
            self.best_state = self._state()

    def _run_phase(self, phase: Phase, data: FitData, out_of_time: Any, bar: Any) -> str:
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.config.learning_rate,
                                      weight_decay=self.config.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: self._lr_factor(phase, s))
        stopper = EarlyStopping(phase.patience, self.config.min_delta, self.step + phase_min_steps(phase, self.config),
                                monitor=self.config.select_on)
        batches = epoch_batches(phase.index, self.config.batch_size, self.generator)
        losses, correct, seen, run = 0.0, 0, 0, 0
        for local in range(1, phase.steps + 1):
            loss, hits, size = self._train_step(next(batches), data, optimizer)
            scheduler.step()
            self.step += 1
            run = local
            self.samples_seen += size
            losses, correct, seen = losses + loss * size, correct + hits, seen + size
            bar.update(1)
            self.report.update(self.step, loss)
            timed_out = out_of_time()
            if local % phase.eval_every == 0 or local == phase.steps or timed_out:
                val_loss, val_acc = self._evaluate(data.val_images, data.val_labels)
                self.history.append({
                    "phase": phase.name, "step": self.step, "epoch": round(local / phase.steps_per_epoch, 3),
                    "train_loss": losses / max(seen, 1), "train_accuracy": correct / max(seen, 1),
                    "val_loss": val_loss, "val_accuracy": val_acc, "lr": optimizer.param_groups[0]["lr"],
                    "samples_seen": self.samples_seen})
                losses, correct, seen = 0.0, 0, 0
                bar.set_postfix(val_loss=f"{val_loss:.3f}", val_acc=f"{val_acc:.3f}")
                if phase.selects and stopper.step(val_loss, self.step, val_acc):
                    self.best_state, self.best_step = self._state(), self.step
                if phase.selects and local < phase.steps and stopper.should_stop:  # a real early end
                    self.phase_steps[phase.name] = run
                    return "early_stopping"
            if timed_out:
                self.phase_steps[phase.name] = run
                return "time_budget"
        self.phase_steps[phase.name] = run
        return "done"

    def _lr_factor(self, phase: Phase, step: int) -> float:
        """Cosine from 1 to 0.01 over the phase (per epoch under budget: epochs, as before; per step otherwise)."""
        if self.config.lr_schedule != "cosine":
            return 1.0
        if phase.epochs is not None:
            progress = min(step // phase.steps_per_epoch, phase.epochs) / phase.epochs
        else:
            progress = min(step, phase.steps) / phase.steps
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress))

    def _train_step(self, batch_idx: torch.Tensor, data: FitData, optimizer: torch.optim.Optimizer
                    ) -> tuple[float, int, int]:
        self.model.train()
        tick = time.perf_counter()
        x = self.batches(data.images[batch_idx], self.generator, train=True).to(self.device, non_blocking=True)
        y = data.labels[batch_idx].to(self.device, non_blocking=True)
        data_done = time.perf_counter()
        with self._autocast():
            logits = self.model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=self.config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            loss.backward()
            optimizer.step()
        hits = int((logits.argmax(1) == y).sum())
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        done = time.perf_counter()
        self.data_seconds += data_done - tick
        self.train_seconds += done - tick
        return float(loss.detach()), hits, len(y)

    def _state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

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



def phase_min_steps(phase: Phase, config: ClassifierConfig) -> int:
    """Steps a phase runs before early stopping may end it, counted from the phase's own start.

    ``min_steps`` in proportion to the phase's share of the budget: the whole floor for a one-phase fit,
    and for synthetic->real a floor of its own for the real fine-tune (the global step alone would let
    the fine-tune stop after ``patience_steps``, since pretraining already passed ``min_steps``).
    """
    if config.budget != "steps":
        return 0
    return min(phase.steps, round(config.min_steps * phase.steps / config.max_steps))


def fit_metrics(spec: FitSpec, config: ClassifierConfig, data: FitData, phases: list[Phase], trainer: Trainer,
                weights: WeightsChoice, key: str, device: torch.device, fit_seconds: float) -> dict[str, Any]:
    """The fit's row of the results table (flat: one value per column)."""
    selected = [h for h in trainer.history if h["step"] == trainer.best_step]
    best = selected[0] if selected else trainer.history[-1]
    reason = trainer.stopped_reason
    return {
        "domain": spec.domain, "arm": spec.arm, "architecture": spec.architecture, "fold": str(spec.fold),
        "fit_key": key, "image_size": config.image_size, "channels": int(data.images.shape[1]),
        "pretrained_requested": weights.requested, "pretrained_used": weights.used,
        "pretrained_source": weights.source, "pretrained_note": weights.note,
        "n_train": int(len(data.plan.train)), "n_val": int(len(data.val_labels)),
        "budget": config.budget, "validation": data.plan.val_table,
        "val_synthetic": int(sum(s != "real" for s in data.val_sources)),
        "val_hash": hash_payload(sorted(data.val_sha256)),
        "step_budget": int(sum(p.steps for p in phases)), "steps_run": int(trainer.step),
        "pretrain_steps": int(trainer.phase_steps.get("pretrain", 0)),
        "min_steps": int(config.min_steps if config.budget == "steps" else 0),
        "samples_seen": int(trainer.samples_seen),
        "epochs_run": round(sum(trainer.phase_steps.get(p.name, 0) / p.steps_per_epoch for p in phases), 3),
        "best_step": int(trainer.best_step), "stopped_reason": reason, "time_budget_hit": reason == "time_budget",
        "train_loss": best["train_loss"], "train_accuracy": best["train_accuracy"],
        "val_loss": best["val_loss"], "val_accuracy": best["val_accuracy"],
        "fit_seconds": round(fit_seconds, 3), "data_seconds": round(trainer.data_seconds, 3),
        "data_wait_share": round(trainer.data_seconds / max(trainer.train_seconds, 1e-9), 4),
        "device": str(device), "seed": fit_seed(spec.seed, spec.arm, spec.architecture, spec.fold),
    }


def save_fit(directory: Path, spec: FitSpec, key: str, trainer: Trainer, data: FitData, phases: list[Phase],
             metrics: dict[str, Any], normalisation: tuple[list[float], list[float]]) -> None:
    """Write the fit's files; metrics.json last (the store marks the key complete after it)."""
    mean, std = normalisation
    state = trainer.best_state
    atomic_save_with(directory / "model.pt", lambda tmp: torch.save(
        {"state_dict": state, "architecture": spec.architecture, "class_names": list(spec.class_names),
         "in_chans": int(data.images.shape[1]), "image_size": metrics["image_size"], "mean": mean, "std": std}, tmp))
    atomic_write_json(directory / "history.json", trainer.history)
    atomic_write_json(directory / "record.json", {
        "validation": {"table": data.plan.val_table, "indices": data.plan.val.tolist(),
                       "sha256": data.val_sha256, "sources": data.val_sources},
        "train": {"table": "arm", "indices": data.plan.train.tolist()},
        "phases": [{"name": p.name, "rows": int(len(p.index)), "steps_planned": p.steps,
                    "steps_run": trainer.phase_steps.get(p.name, 0), "selects": p.selects,
                    "eval_every": p.eval_every, "patience": p.patience} for p in phases],
        "best_step": trainer.best_step, "stopped_reason": trainer.stopped_reason,
    })
    atomic_write_json(directory / "spec.json", {**dataclasses.asdict(spec), "key": key})
    atomic_write_json(directory / "metrics.json", metrics)


def _amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """Mixed precision only on a GPU: bf16 autocast is slower than fp32 on this kind of CPU."""
    if device.type != "cuda" or setting == "no":
        return None
    return torch.float16 if setting == "fp16" else torch.bfloat16
