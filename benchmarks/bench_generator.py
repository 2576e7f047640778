"""Generator benchmark: our training step vs a plain diffusers reference loop, sampling cost, FLOPs.

    python -m benchmarks.bench_generator                  # cpu profile, 64 px, batch 16 (from the repository root)
    python -m benchmarks.bench_generator --profile gpu    # gpu profile (128 px, bf16)

Training: ours (``GeneratorTrainer.train_step``: augmentation, label dropout, accelerate, clipping,
AdamW + warm-up/cosine, EMA) and the reference (the minimal UNet2DModel + DDPMScheduler step
written below) use the same model config and batch, and are timed in alternating rounds in one
process, so machine noise hits both alike; numbers are medians of per-step times.
Sampling: seconds per image of our guided loop for DPM-Solver++ 20, DDIM 50 and DDPM 1000 steps,
guidance off (scale 1, one UNet pass per step) and on (scale 2, two passes). On the CPU the DDPM
figure is extrapolated from 50 timed steps (the per-step cost does not depend on the step count).
FLOPs: counted with torch.utils.flop_counter for one training step; the achieved fraction is
relative to this machine's measured dense matmul peak (fp32 on the CPU, bf16 on a GPU).

Prints a table and writes JSON to benchmarks/results/generator.json (generator-gpu.json for gpu).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]

from diffusers import DDPMScheduler, UNet2DModel
from torch.utils.flop_counter import FlopCounterMode

from pipeline.config import SAMPLERS, load_domain_config
from pipeline.generator.data import batch_indices
from pipeline.generator.model import count_parameters
from pipeline.generator.pipeline import ClassConditionalPipeline
from pipeline.generator.sampling import make_sampler, noise_schedule, use_sampler
from pipeline.generator.train import GeneratorTrainer
from pipeline.store import atomic_write_json

NUM_CLASSES = 4
BENCH_STEPS = {"sde-dpmsolver++": 20, "dpmsolver++": 20, "ddim": 50, "ddpm": 1000}  # one per SAMPLERS entry


class ReferenceLoop:
    """The plain loop a diffusers user would write: same UNet config, DDPM noise, MSE, AdamW."""

    def __init__(self, unet_kwargs: dict[str, Any], num_train_timesteps: int, beta_schedule: str, lr: float,
                 device: torch.device, bf16: bool) -> None:
        torch.manual_seed(0)
        self.model = UNet2DModel(**unet_kwargs).to(device).train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr)
        self.scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule)
        self.device, self.bf16 = device, bf16

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        x0 = (images.float() / 127.5 - 1.0).to(self.device)
        labels = labels.to(self.device)
        noise = torch.randn_like(x0)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (x0.shape[0],), device=self.device)
        noisy = self.scheduler.add_noise(x0, noise, t)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            pred = self.model(noisy, t, class_labels=labels).sample
        loss = F.mse_loss(pred.float(), noise)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def matmul_peak(device: torch.device, bf16: bool) -> float:
    """Measured dense matmul throughput (FLOP/s), the best of several runs."""
    n = 8192 if device.type == "cuda" else 2048
    dtype = torch.bfloat16 if bf16 else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    times = [timed(lambda: a @ b, device) for _ in range(8)]
    return 2 * n**3 / min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--size", type=int, default=None, help="image size (default: the profile's)")
    parser.add_argument("--batch", type=int, default=None, help="training batch (default: 16 cpu, profile's gpu)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4, help="alternating timing rounds")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per round and loop")
    parser.add_argument("--full-ddpm", action="store_true", help="time all 1000 DDPM steps (default on GPU)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    config = load_domain_config("brain-mri", args.profile)
    gcfg = config.generator
    if args.size:
        gcfg.image_size = args.size
    gcfg.batch_size = args.batch or (16 if args.profile == "cpu" else gcfg.batch_size)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = gcfg.mixed_precision == "bf16" and device.type == "cuda"
    if not bf16:
        gcfg.mixed_precision = "no"
    full_ddpm = args.full_ddpm or device.type == "cuda"

    trainer = GeneratorTrainer(gcfg, channels=1, num_classes=NUM_CLASSES, seed=0)
    reference = ReferenceLoop(trainer.unet_kwargs, gcfg.num_train_timesteps, gcfg.beta_schedule,
                              gcfg.learning_rate, device, bf16)
    g = torch.Generator().manual_seed(0)
    n_images = 256
    images = torch.randint(0, 256, (n_images, 1, gcfg.image_size, gcfg.image_size), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, NUM_CLASSES, (n_images,), generator=g)

    step_counter = {"ours": 0}

    def ours_step() -> None:
        s = step_counter["ours"]
        idx = batch_indices(n_images, gcfg.batch_size, s, 0)
        trainer.train_step(images[idx], labels[idx], s)
        step_counter["ours"] += 1

    def ref_step() -> None:
        idx = torch.randint(0, n_images, (gcfg.batch_size,))
        reference.step(images[idx], labels[idx])

    for _ in range(2):  # warm-up: allocator, kernels, lazy inits
        ours_step()
        ref_step()
    times: dict[str, list[float]] = {"ours": [], "reference": []}
    for r in range(args.rounds):
        order = [("ours", ours_step), ("reference", ref_step)]
        if r % 2:
            order.reverse()
        for name, fn in order:
            times[name].extend(timed(fn, device) for _ in range(args.steps))
    med = {k: statistics.median(v) for k, v in times.items()}
    ips = {k: gcfg.batch_size / v for k, v in med.items()}
    peak_rss_train_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu_peak_mib = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None

    # FLOPs of one reference-equivalent training step (forward + backward), per image
    flop_model = UNet2DModel(**trainer.unet_kwargs).to(device)
    x = torch.randn(gcfg.batch_size, 1, gcfg.image_size, gcfg.image_size, device=device)
    t = torch.randint(0, 1000, (gcfg.batch_size,), device=device)
    lab = torch.randint(0, NUM_CLASSES, (gcfg.batch_size,), device=device)
    with FlopCounterMode(display=False) as counter:
        flop_model(x, t, class_labels=lab).sample.square().mean().backward()
    flops_per_image = counter.get_total_flops() / gcfg.batch_size
    del flop_model
    peak = matmul_peak(device, bf16)

    # sampling: EMA weights of the trainer (timing does not depend on what was learned)
    gen_model = UNet2DModel(**trainer.unet_kwargs)
    gen_model.load_state_dict(trainer.ema_state_dict())
    gen_model.to(device).eval()
    if bf16:
        gen_model.to(torch.bfloat16)
    pipe = ClassConditionalPipeline(gen_model, make_sampler("ddim", noise_schedule(trainer.noise_scheduler.config), 50),
                                    [f"c{i}" for i in range(NUM_CLASSES)], "L")
    pipe.set_progress_bar_config(disable=True)
    sample_batch = 16
    labs = [i % NUM_CLASSES for i in range(sample_batch)]
    seeds = list(range(sample_batch))
    sampling: list[dict[str, Any]] = []
    for sampler in SAMPLERS:  # every sampler the config allows, at its usual step count
        steps = BENCH_STEPS[sampler]
        timed_steps = steps if (sampler != "ddpm" or full_ddpm) else 50
        for guidance in (1.0, 2.0):
            if bf16:
                pipe.unet.to(torch.float32)  # sampling in fp32: our loop's default
            use_sampler(pipe, sampler, timed_steps)
            seconds = timed(lambda: pipe(labs, timed_steps, guidance, [torch.Generator().manual_seed(s) for s in seeds],
                                         output_type="pt"), device)
            per_image = seconds * (steps / timed_steps) / sample_batch
            sampling.append({"sampler": sampler, "steps": steps, "guidance_scale": guidance,
                             "seconds_per_image": round(per_image, 4), "batch": sample_batch,
                             "extrapolated_from_steps": None if timed_steps == steps else timed_steps})
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    result = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "device": str(device),
                    "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
                    "threads": args.threads, "torch": torch.__version__},
        "profile": args.profile, "image_size": gcfg.image_size, "batch_size": gcfg.batch_size,
        "precision": "bf16 autocast" if bf16 else "fp32",
        "model": {"block_out_channels": gcfg.block_out_channels, "layers_per_block": gcfg.layers_per_block,
                  "attention_levels": gcfg.attention_levels, "parameters": count_parameters(trainer.unwrapped)},
        "training": {"ours_images_per_s": round(ips["ours"], 2), "reference_images_per_s": round(ips["reference"], 2),
                     "ratio_ours_over_reference": round(ips["ours"] / ips["reference"], 3),
                     "median_step_s": {k: round(v, 4) for k, v in med.items()},
                     "timed_steps_each": len(times["ours"]), "rounds": args.rounds,
                     "peak_rss_mib_after_training": round(peak_rss_train_mib, 1),
                     "gpu_peak_allocated_mib": round(gpu_peak_mib, 1) if gpu_peak_mib else None},
        "flops": {"per_training_image_gflop": round(flops_per_image / 1e9, 3),
                  "matmul_peak_gflop_s": round(peak / 1e9, 1),
                  "achieved_gflop_s_ours": round(flops_per_image * ips["ours"] / 1e9, 1),
                  "fraction_of_peak_ours": round(flops_per_image * ips["ours"] / peak, 3),
                  "fraction_of_peak_reference": round(flops_per_image * ips["reference"] / peak, 3)},
        "sampling": sampling,
        "peak_rss_mib": round(peak_rss_mib, 1),
    }
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / (
        "generator.json" if args.profile == "cpu" else "generator-gpu.json")
    atomic_write_json(out, result)
    print_table(result)
    print(f"\nwritten: {out}")
    return 0


def print_table(r: dict[str, Any]) -> None:
    t, f = r["training"], r["flops"]
    print(f"generator benchmark: profile {r['profile']}, {r['image_size']} px, batch {r['batch_size']}, "
          f"{r['precision']}, {r['machine']['device']} ({r['machine']['threads']} threads), "
          f"{r['model']['parameters'] / 1e6:.2f} M parameters")
    print(f"{'training':<34}{'img/s':>10}{'s/step':>10}")
    print(f"{'  ours (pipeline train_step)':<34}{t['ours_images_per_s']:>10.2f}{t['median_step_s']['ours']:>10.3f}")
    print(f"{'  reference (plain diffusers loop)':<34}{t['reference_images_per_s']:>10.2f}"
          f"{t['median_step_s']['reference']:>10.3f}")
    print(f"{'  ratio ours / reference':<34}{t['ratio_ours_over_reference']:>10.3f}   (target >= 0.95)")
    print(f"  peak RSS after training {t['peak_rss_mib_after_training']:.0f} MiB (both loops in one process); "
          f"overall {r['peak_rss_mib']:.0f} MiB")
    print(f"  FLOPs per training image {f['per_training_image_gflop']:.2f} GFLOP; matmul peak "
          f"{f['matmul_peak_gflop_s']:.0f} GFLOP/s; achieved {f['achieved_gflop_s_ours']:.0f} GFLOP/s = "
          f"{f['fraction_of_peak_ours']:.0%} of peak (reference {f['fraction_of_peak_reference']:.0%})")
    print(f"{'sampling (batch 16)':<28}{'steps':>6}{'guidance':>10}{'s/image':>10}")
    for s in r["sampling"]:
        note = f"  (extrapolated from {s['extrapolated_from_steps']} timed steps)" if s["extrapolated_from_steps"] else ""
        print(f"  {s['sampler']:<26}{s['steps']:>6}{s['guidance_scale']:>10.1f}{s['seconds_per_image']:>10.3f}{note}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    raise SystemExit(main())
