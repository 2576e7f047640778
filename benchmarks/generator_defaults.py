"""Measure the generator defaults on a real dataset: prediction type x x0 handling, by the intensity signal.

    python benchmarks/generator_defaults.py --domain brain-mri --data ../shared/data/brain-mri --steps 500

Trains (or reuses from the run store) two generators that differ only in the training changes of
issue 8: "epsilon" (epsilon prediction, plain MSE, diffusers' EMA warm-up power 2/3: the settings
before issue 8) and "v+minsnr" (v-prediction, Min-SNR-5, EMA power 1). Each samples
``--per-class`` images per class with the shipped sampler, once per ``x0_clip`` (clip / dynamic /
off). Every sample set is compared with the real 20% training sample only (pipeline.quality.signals:
per-class mean, std, background level in [0, 1]). Writes benchmarks/results/ablation/<domain>-defaults.json
and .md. Nothing here reads the held-out images.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from pipeline.config import deep_merge, load_domain_config  # noqa: E402
from pipeline.generator.sampling import image_seed, load_pipeline  # noqa: E402
from pipeline.generator.synthesis import render  # noqa: E402
from pipeline.generator.stage import real_sample, train_generator_stage  # noqa: E402
from pipeline.quality.signals import class_statistics, intensity_gap  # noqa: E402
from flows.run import run_domain  # noqa: E402
from pipeline.store import atomic_write_json, atomic_write_text  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "epsilon": {"prediction_type": "epsilon", "snr_gamma": 0.0, "ema_power": 2.0 / 3.0},
    "v+minsnr": {"prediction_type": "v_prediction", "snr_gamma": 5.0, "ema_power": 1.0, "ema_decay": 0.99},
}
CLIPS = ("clip", "dynamic", "off")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--runs-root", default="/tmp/ablation-runs")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--per-class", type=int, default=16)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args(argv)
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    out = ROOT / "benchmarks" / "results" / "ablation" / f"{args.domain}-defaults.json"
    rows: list[dict[str, Any]] = []
    for name in args.variants.split(","):
        config = load_domain_config(args.domain, "cpu", deep_merge(
            {"runs_root": args.runs_root, "generator": {"train_steps": args.steps, "checkpoint_every": 100}},
            {"generator": VARIANTS[name]}))
        record = run_domain(config, args.data, progress=False, until="split")
        split_path = record.stages["split"]["split"]
        generator = train_generator_stage(config, split_path, progress=False)
        real = real_sample(config, split_path)
        loaded = load_pipeline(generator.pipeline_path)
        class_names = list(loaded.config.class_names)
        real_stats = class_statistics(real.images, real.labels, class_names)
        for clip in CLIPS:
            syn = config.synthesis.model_copy(update={"x0_clip": clip, "timestep_spacing": "trailing"})
            labels = [c for c in range(len(class_names)) for _ in range(args.per_class)]
            seeds = [image_seed(config.seed + 2, c, i) for c in range(len(class_names)) for i in range(args.per_class)]
            started = time.perf_counter()
            images = torch.cat([render(loaded, labels[k:k + 32], seeds[k:k + 32], syn)
                                for k in range(0, len(labels), 32)])
            stats = class_statistics(images, torch.tensor(labels), class_names)
            gap = intensity_gap(stats, real_stats)
            rows.append({"variant": name, "x0_clip": clip, "steps": args.steps, "gap": round(gap["gap"], 4),
                         "per_class": {c: {"synthetic": {k: round(float(stats.loc[c, k]), 4) for k in ("mean", "std", "background")},
                                           "real": {k: round(float(real_stats.loc[c, k]), 4) for k in ("mean", "std", "background")}}
                                       for c in class_names},
                         "generator_key": generator.key, "sample_seconds": round(time.perf_counter() - started, 1)})
            print(f"{name:9s} x0_clip={clip:8s} gap={gap['gap']:.4f}  " + "  ".join(
                f"{c}: mean {stats.loc[c, 'mean']:.3f}/{real_stats.loc[c, 'mean']:.3f} bg {stats.loc[c, 'background']:.3f}/"
                f"{real_stats.loc[c, 'background']:.3f}" for c in class_names), flush=True)
    atomic_write_json(out, {"command": command, "domain": args.domain, "rows": rows})
    lines = ["| variant | x0_clip | gap | " + " | ".join(f"{c} mean / bg (real)" for c in rows[0]["per_class"]) + " |",
             "|---|---|---|" + "---|" * len(rows[0]["per_class"])]
    for r in rows:
        cells = [f"{v['synthetic']['mean']:.3f} / {v['synthetic']['background']:.3f} ({v['real']['mean']:.3f} / "
                 f"{v['real']['background']:.3f})" for v in r["per_class"].values()]
        lines.append(f"| {r['variant']} | {r['x0_clip']} | {r['gap']:.4f} | " + " | ".join(cells) + " |")
    atomic_write_text(out.with_suffix(".md"), f"# Generator defaults: {args.domain}, {args.steps} steps\n\n"
                      f"Command: `{command}`\n\nIntensity gap of {args.per_class} samples per class vs the real 20% "
                      f"sample (pixels in [0, 1]; lower is better); shipped sampler (SDE-DPM-Solver++ 20 steps, guidance "
                      f"2, trailing timesteps).\n\n" + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
