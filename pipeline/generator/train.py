"""The training loop: conditional denoising on the split's training side, through accelerate.

One ``GeneratorTrainer.train_step`` is: light augmentation, class-label dropout (the null label
trains the unconditional branch used by guidance), noise at a random DDPM timestep, the UNet's
epsilon or v prediction, MSE (Min-SNR-gamma weighted per timestep when ``snr_gamma`` > 0, as in
diffusers' training examples), backward, gradient clipping, AdamW, warm-up + cosine LR, EMA.

``train_generator`` is four named steps: ``start_or_resume`` (fresh trainer or the newest
readable checkpoint), ``run_steps`` (the loop, checkpointing every ``checkpoint_every``),
``export_generator`` (the EMA weights and the configured sampler as a diffusers pipeline folder) and the returned ``TrainResult``.

Devices come from accelerate: the CPU here, one GPU with bf16 autocast
(``generator.mixed_precision: bf16``), or several GPUs with

    accelerate launch --multi_gpu --num_processes 4 -m flows.cli generator train --domain brain-mri --profile gpu

where every process draws its own slice of each step's batch (``data.batch_indices``) and only
the main process writes checkpoints.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel, compute_snr
from tqdm.auto import tqdm

from pipeline.config import GENERATOR_LEGACY_VALUES, DomainConfig, GeneratorConfig, resolve_mixed_precision
from pipeline.errors import ConfigError, TrainingError
from pipeline.generator.checkpoint import (load_guide, load_latest_checkpoint, rng_state, save_checkpoint, save_guide,
                                          set_rng_state)
from pipeline.generator.data import TrainingData, augment, batch_indices, step_generator, to_model_range
from pipeline.generator.model import build_unet, count_parameters, null_class, unet_config
from pipeline.generator.sampling import export_pipeline, make_sampler
from pipeline.progress import Progress

# Settings that may differ between a checkpoint and the run resuming it (they do not change the model).
RESUMABLE_CHANGES = ("train_steps", "checkpoint_every", "keep_checkpoints")


def make_noise_scheduler(config: GeneratorConfig) -> DDPMScheduler:
    """The forward (noising) process shared by training and every sampler."""
    return DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule,
                         prediction_type=config.prediction_type)


class GeneratorTrainer:
    """Model, optimizer, LR schedule, EMA and the one training step; state in and out as dicts."""

    def __init__(self, config: GeneratorConfig, channels: int, num_classes: int, seed: int,
                 accelerator: Accelerator | None = None) -> None:
        self.config = config
        self.seed = seed
        self.accelerator = accelerator or make_accelerator(config)
        torch.manual_seed(seed)  # identical initial weights on every process and every run
        model = build_unet(config, channels, num_classes)
        self.null_label = null_class(model)
        self.unet_kwargs = unet_config(config, channels, num_classes)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate,
                                      weight_decay=config.weight_decay)
        self.lr_scheduler = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.train_steps)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        # decay at step t: min(ema_decay, 1 - (1 + t) ** -ema_power) (see GeneratorConfig.ema_decay_at)
        self.ema = EMAModel(self.unwrapped.parameters(), decay=config.ema_decay, use_ema_warmup=True,
                            inv_gamma=1.0, power=config.ema_power)
        self.ema.to(self.accelerator.device)
        self.noise_scheduler = make_noise_scheduler(config)
        self.alphas = self.noise_scheduler.alphas_cumprod.to(self.accelerator.device)

    @property
    def unwrapped(self) -> UNet2DModel:
        return self.accelerator.unwrap_model(self.model)

    def loss(self, x_uint8: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The denoising loss of one batch; every random draw comes from ``generator``."""
        device = self.accelerator.device
        x0 = augment(to_model_range(x_uint8.to(device)), self.config, generator)
        n = x0.shape[0]
        drop = torch.rand(n, generator=generator) < self.config.class_dropout
        labels = torch.where(drop, torch.full_like(labels, self.null_label), labels).to(device)
        noise = torch.randn(x0.shape, generator=generator).to(device)
        t = torch.randint(0, self.config.num_train_timesteps, (n,), generator=generator).to(device)
        noisy = self.noise_scheduler.add_noise(x0, noise, t)
        if self.config.prediction_type == "epsilon":
            target = noise
        else:
            target = self.noise_scheduler.get_velocity(x0, noise, t)
        with self.accelerator.autocast():
            prediction = self.model(noisy, t, class_labels=labels).sample
        per_image = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        return (per_image * self.loss_weights(t)).mean()

    def loss_weights(self, t: torch.Tensor) -> torch.Tensor:
        """Min-SNR-gamma weights per timestep (Hang et al. 2023), exactly as diffusers' train_text_to_image:
        min(SNR, gamma) / SNR for epsilon, min(SNR, gamma) / (SNR + 1) for v; all ones when snr_gamma = 0."""
        gamma = self.config.snr_gamma
        if gamma <= 0:
            return torch.ones(t.shape, device=t.device)
        snr = compute_snr(self.noise_scheduler, t)
        clipped = torch.clamp(snr, max=gamma)
        if self.config.prediction_type == "epsilon":
            return clipped / snr
        return clipped / (snr + 1)

    def train_step(self, x_uint8: torch.Tensor, labels: torch.Tensor, step: int) -> float:
        """One optimizer step at ``step`` (0-based): returns the batch loss."""
        self.model.train()
        generator = step_generator(self.seed, step, self.accelerator.process_index)
        loss = self.loss(x_uint8, labels, generator)
        self.accelerator.backward(loss)
        if self.config.grad_clip > 0:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.step(self.unwrapped.parameters())
        return float(loss.detach())

    def state_dict(self, step: int) -> dict[str, Any]:
        return {"model": self.unwrapped.state_dict(), "ema": self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(), "lr_scheduler": self.lr_scheduler.state_dict(),
                "step": step, "rng": rng_state(), "unet_config": json.dumps(self.unet_kwargs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.unwrapped.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.ema.load_state_dict(state["ema"])
        self.ema.to(self.accelerator.device)
        set_rng_state(state["rng"])

    def ema_state_dict(self) -> dict[str, torch.Tensor]:
        """The EMA weights as a plain float32 CPU state dict (what sampling uses)."""
        model = build_unet_from(self.unet_kwargs)
        self.ema.copy_to(model.parameters())
        return {k: v.detach().float().cpu() for k, v in model.state_dict().items()}


def make_accelerator(config: GeneratorConfig) -> Accelerator:
    use_cpu = not torch.cuda.is_available()
    precision = resolve_mixed_precision(config.mixed_precision, "cpu" if use_cpu else "cuda")
    if use_cpu and precision == "fp16":
        raise ConfigError("generator.mixed_precision = 'fp16' is invalid on a CPU; expected 'auto', 'no' or 'bf16'")
    return Accelerator(mixed_precision=precision, cpu=use_cpu)


def build_unet_from(kwargs: dict[str, Any]) -> UNet2DModel:
    return UNet2DModel(**kwargs)


@dataclass
class TrainResult:
    model_path: Path  # the exported EMA generator: a ClassConditionalPipeline folder (save_pretrained)
    steps: int
    resumed_from: int | None  # step of the checkpoint this run continued from
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, loss) of the steps this run did
    seconds: float = 0.0
    images_per_second: float = 0.0
    parameters: int = 0


def train_generator(config: DomainConfig, data: TrainingData, out_dir: Path, training_hash: str,
                    progress: bool = True, on_step: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train (or resume) the generator in ``out_dir``; export the EMA model as ``out_dir/pipeline/``."""
    out_dir = Path(out_dir)
    trainer, start = start_or_resume(config, data, out_dir / "checkpoints")
    identity = training_identity(config, data, training_hash)
    losses, seconds = run_steps(trainer, config, data, start, out_dir / "checkpoints", identity, progress, on_step)
    model_path = export_generator(trainer, config, out_dir / "pipeline", identity, out_dir / "checkpoints")
    done = config.generator.train_steps - start
    rate = done * config.generator.batch_size * trainer.accelerator.num_processes / seconds if seconds > 0 else 0.0
    return TrainResult(model_path, config.generator.train_steps, start or None, losses, seconds,
                       rate if done else 0.0, count_parameters(trainer.unwrapped))


def training_identity(config: DomainConfig, data: TrainingData, training_hash: str) -> dict[str, Any]:
    """What the generator was trained on: stored in every checkpoint and in the export."""
    return {"manifest_hash": data.manifest_hash, "sha256s": data.sha256s, "class_names": data.class_names,
            "mode": config.data.mode, "channels": config.channels, "training_hash": training_hash, "seed": config.seed}


def start_or_resume(config: DomainConfig, data: TrainingData, ckpt_dir: Path) -> tuple[GeneratorTrainer, int]:
    """A fresh trainer, or one restored from the newest readable checkpoint; returns (trainer, first step)."""
    trainer = GeneratorTrainer(config.generator, config.channels, len(data.class_names), config.seed)
    found = load_latest_checkpoint(ckpt_dir, map_location="cpu")
    if found is None:
        return trainer, 0
    state, path = found
    _check_resumable(state, config.generator, data, path)
    trainer.load_state_dict(state)
    return trainer, int(state["step"])


def run_steps(trainer: GeneratorTrainer, config: DomainConfig, data: TrainingData, start: int, ckpt_dir: Path,
              identity: dict[str, Any], progress: bool,
              on_step: Callable[[int, float], None] | None) -> tuple[list[tuple[int, float]], float]:
    """Optimizer steps ``start`` .. ``train_steps``, checkpointing; returns ((step, loss) list, seconds)."""
    gcfg = config.generator
    accelerator = trainer.accelerator
    total = gcfg.train_steps
    losses: list[tuple[int, float]] = []
    bar = tqdm(total=total, initial=start, desc="generator", unit="step",
               disable=not progress or not accelerator.is_main_process)
    report = Progress("generator", total, start=start, enabled=accelerator.is_main_process)
    began = time.perf_counter()
    for step in range(start, total):
        idx = batch_indices(len(data.labels), gcfg.batch_size, step, config.seed,
                            accelerator.process_index, accelerator.num_processes)
        loss = trainer.train_step(data.images[idx], data.labels[idx], step)
        if not math.isfinite(loss):  # before any checkpoint or export: a diverged model is never saved or sampled
            bar.close()
            raise TrainingError(f"generator training diverged at step {step + 1} (loss {loss}); lower "
                                f"generator.learning_rate (now {gcfg.learning_rate:g}) or raise generator.warmup_steps; "
                                f"nothing was synthesised")
        losses.append((step + 1, loss))
        rate = len(losses) * gcfg.batch_size * accelerator.num_processes / (time.perf_counter() - began)
        bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{rate:.1f}")
        bar.update(1)
        report.update(step + 1, loss)
        if (step + 1) % gcfg.checkpoint_every == 0 or step + 1 == total:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                save_checkpoint(ckpt_dir, {**trainer.state_dict(step + 1), "generator_config": _gcfg_dict(gcfg),
                                           "data": identity}, keep=gcfg.keep_checkpoints)
        if gcfg.guide_step == step + 1 and accelerator.is_main_process:
            save_guide(ckpt_dir, step + 1, trainer.ema_state_dict())
        if on_step is not None:
            on_step(step + 1, loss)
    bar.close()
    report.finish()
    return losses, time.perf_counter() - began


def noise_settings(gcfg: GeneratorConfig) -> dict[str, Any]:
    return {"num_train_timesteps": gcfg.num_train_timesteps, "beta_schedule": gcfg.beta_schedule,
            "prediction_type": gcfg.prediction_type}


def export_generator(trainer: GeneratorTrainer, config: DomainConfig, model_path: Path,
                     identity: dict[str, Any], ckpt_dir: Path | None = None) -> Path:
    """Export the EMA weights as a ClassConditionalPipeline folder whose scheduler is the configured sampler
    with all its settings (``scheduler/scheduler_config.json`` holds the full scheduler config), and the
    autoguidance guide's weights beside them when ``generator.guide_step`` kept one."""
    syn, guide_step = config.synthesis, config.generator.guide_step
    if trainer.accelerator.is_main_process:
        sampler = make_sampler(syn.sampler, noise_settings(config.generator), syn.steps, syn)
        guide = load_guide(ckpt_dir or model_path.parent / "checkpoints", guide_step) if guide_step else None
        export_pipeline(model_path, trainer.unet_kwargs, trainer.ema_state_dict(), sampler, identity["class_names"],
                        config.data.mode, syn.steps, syn.guidance_scale, identity, guide_state=guide)
    trainer.accelerator.wait_for_everyone()
    return model_path


def _gcfg_dict(config: GeneratorConfig) -> dict[str, Any]:
    return config.to_dict()


def _check_resumable(state: dict[str, Any], config: GeneratorConfig, data: TrainingData, path: Path) -> None:
    """A checkpoint continues only the same model on the same images."""
    if state["data"]["manifest_hash"] != data.manifest_hash:
        raise ConfigError(f"checkpoint {path} was trained on other images (manifest hash "
                          f"{state['data']['manifest_hash']} != {data.manifest_hash}); use a fresh output folder")
    saved, current = dict(state["generator_config"]), _gcfg_dict(config)
    for key, legacy in GENERATOR_LEGACY_VALUES.items():  # a checkpoint from before the setting existed
        saved.setdefault(key, legacy)
    changed = sorted(k for k in current if k not in RESUMABLE_CHANGES and saved.get(k) != current[k])
    if changed:
        raise ConfigError(f"checkpoint {path} was made with different generator settings ({', '.join(changed)}); "
                          f"only {', '.join(RESUMABLE_CHANGES)} may change when resuming")
