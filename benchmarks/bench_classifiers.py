"""Classifier zoo throughput on this machine: train and inference img/s, peak memory, data-wait share.

    python -m benchmarks.bench_classifiers                  # all eight architectures at 64 and 128 px
    python -m benchmarks.bench_classifiers --arch resnet18 --sizes 64     (from the repository root)

Each (architecture, size) runs in its own process so its peak resident memory (ru_maxrss) is its
own. Training is the real loop's work per batch: uint8 batch -> float, the real+aug augmentation
(flips, rotation, scaling: the costliest arm), normalisation, forward, cross-entropy, backward,
AdamW step. "data share" is the time spent making batches over the whole step time: the share of
a fit spent waiting for data (target < 10%), since the loop has no background loader.
Prints a table and writes benchmarks/results/classifiers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "classifiers.json"


def measure(arch: str, size: int, channels: int, batch: int, steps: int, threads: int) -> dict[str, object]:
    """One (architecture, size) in this process: warm-up step, then ``steps`` timed steps."""
    import torch
    import torch.nn.functional as F
    from timm.data import resolve_input_data_config

    from classifiers import zoo
    from classifiers.data import BatchMaker
    from pipeline.config import ClassifierConfig

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = zoo.create(arch, in_chans=channels, num_classes=4)
    data_config = resolve_input_data_config(model)
    mean, std = list(data_config["mean"]), list(data_config["std"])
    batches = BatchMaker(mean, std, ClassifierConfig(), augment=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randint(0, 256, (batch * 4, channels, size, size), dtype=torch.uint8)
    labels = torch.randint(0, 4, (batch * 4,))
    generator = torch.Generator().manual_seed(0)
    data_s = step_s = 0.0
    model.train()
    for step in range(steps + 1):
        idx = torch.randperm(len(images), generator=generator)[:batch]
        tick = time.perf_counter()
        x, y = batches(images[idx], generator, train=True), labels[idx]
        made = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        done = time.perf_counter()
        if step > 0:  # the first step allocates and picks kernels
            data_s += made - tick
            step_s += done - tick
    model.eval()
    eval_batch = batch * 2
    x_eval = batches(images[:eval_batch])
    with torch.no_grad():
        model(x_eval)
        tick = time.perf_counter()
        for _ in range(max(1, steps // 2)):
            model(batches(images[:eval_batch]))
        infer_s = time.perf_counter() - tick
    return {"architecture": arch, "size": size, "channels": channels, "batch": batch, "threads": threads,
            "train_img_s": round(batch * steps / step_s, 1),
            "infer_img_s": round(eval_batch * max(1, steps // 2) / infer_s, 1),
            "data_share": round(data_s / step_s, 4),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2)}


def main() -> int:
    from pipeline.config import CLASSIFIER_ARCHITECTURES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", nargs="*", default=list(CLASSIFIER_ARCHITECTURES))
    parser.add_argument("--sizes", nargs="*", type=int, default=[64, 128])
    parser.add_argument("--channels", type=int, default=1, help="1 (CT/MRI) or 3 (microscopy)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per configuration")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child-process mode
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.arch[0], args.sizes[0], args.channels, args.batch, args.steps, args.threads)))
        return 0

    rows = []
    started = time.perf_counter()
    for arch in args.arch:
        for size in args.sizes:
            cmd = [sys.executable, "-m", "benchmarks.bench_classifiers", "--one", "--arch", arch, "--sizes",
                   str(size), "--channels", str(args.channels), "--batch", str(args.batch), "--steps", str(args.steps),
                   "--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
            if proc.returncode != 0:
                rows.append({"architecture": arch, "size": size, "error": proc.stderr.strip().splitlines()[-1]})
            else:
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(_line(rows[-1]), flush=True) if len(rows) > 1 else print(_header() + "\n" + _line(rows[-1]),
                                                                          flush=True)
    payload = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": sys.version.split()[0]},
               "settings": vars(args) | {"out": None}, "seconds": round(time.perf_counter() - started, 1),
               "results": rows}
    from pipeline.store import atomic_write_json

    atomic_write_json(args.out, payload)
    print(f"wrote {args.out} ({payload['seconds']} s)")
    return 0


def _header() -> str:
    return (f"{'architecture':<16}{'px':>5}{'train img/s':>13}{'infer img/s':>13}{'peak MiB':>10}"
            f"{'data share':>12}{'params M':>10}")


def _line(row: dict[str, object]) -> str:
    if "error" in row:
        return f"{row['architecture']:<16}{row['size']:>5}  error: {row['error']}"
    return (f"{row['architecture']:<16}{row['size']:>5}{row['train_img_s']:>13}{row['infer_img_s']:>13}"
            f"{row['peak_rss_mib']:>10}{row['data_share']:>11.1%}{row['params_m']:>10}")


if __name__ == "__main__":
    sys.exit(main())
