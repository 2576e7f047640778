"""Quality-stage cost on this machine: seconds per 1,000 synthetic images and peak memory.

    python -m benchmarks.bench_quality                      # 1000 synthetic images, 64 px, grayscale
    python -m benchmarks.bench_quality --synthetic 1000 2000 --size 64

Each size runs in its own process (peak resident memory = ru_maxrss of that process). The real data
is the phantom set (200 per class, 4 classes; the split's 20% = 160 real training images) and the
"synthetic" set is fresh phantoms, so nothing trains here. The reference classifier is a stand-in with
the real one's shape of work: 3 fold models of resnet18 (random weights) at the same size, each run
for the features and for the probabilities (pipeline.quality.judge.FoldModels averages its fold models). The
reference's own training is a separate, cached stage and is not counted. Inception-v3 is skipped
offline and not counted. Writes benchmarks/results/bench_quality.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "bench_quality.json"
sys.path.insert(0, str(ROOT))


def matmul_gflops() -> float:
    import torch

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    return round(10 * 2 * 1024 ** 3 / (time.perf_counter() - start) / 1e9, 1)


class ForkReference:
    """k fold models averaged, like pipeline.quality.judge.FoldModels (random weights here)."""

    def __init__(self, channels: int, classes: int, folds: int = 3) -> None:
        import torch
        from classifiers import zoo

        torch.manual_seed(0)
        self.models = [zoo.create("resnet18", channels, classes).eval() for _ in range(folds)]

    def _run(self, images, head: bool):
        import numpy as np
        import torch

        outs = []
        with torch.inference_mode():
            for model in self.models:
                chunks = []
                for k in range(0, len(images), 256):
                    x = images[k:k + 256].float() / 255.0
                    f = model.forward_head(model.forward_features(x), pre_logits=not head)
                    chunks.append(torch.softmax(f, 1) if head else f)
                outs.append(torch.cat(chunks).numpy())
        return np.mean(outs, axis=0)

    def features(self, images):
        return self._run(images, head=False)

    def predict_proba(self, images):
        return self._run(images, head=True)


def measure(synthetic: int, size: int, mode: str) -> dict[str, object]:
    import numpy as np
    import pandas as pd

    from pipeline.config import load_domain_config
    from pipeline.demo_data import DEMO_CLASSES, PhantomSpec, colourise, make_demo_dataset, render_phantom
    from pipeline.imageio import save_png
    from pipeline.quality.judge import FixedReference
    from pipeline.quality.features import DomainExtractor
    from pipeline.quality.stage import quality_stage
    from pipeline.stages import ingest_stage, split_stage
    from pipeline.validate import sha256_file

    work = Path(tempfile.mkdtemp(prefix="bench-quality-"))
    data = make_demo_dataset(work / "data", PhantomSpec(200, size, mode, 5), progress=False)
    config = load_domain_config("demo" if mode == "L" else "demo-rgb", "cpu",
                                {"runs_root": str(work / "runs"), "generator": {"image_size": size},
                                 "data": {"path": str(data)}})
    ingest = ingest_stage(config, data, progress=False)
    split = split_stage(config, ingest.manifest_path)
    rng = np.random.default_rng(1)
    rows = []
    for i in range(synthetic):
        label = DEMO_CLASSES[i % len(DEMO_CLASSES)]
        gray = render_phantom(label, size, rng)
        pixels = np.round((colourise(gray, rng) if mode == "RGB" else gray) * 255).astype(np.uint8)
        path = save_png(pixels, work / "synthetic" / label / f"{i:05d}.png")
        rows.append({"path": str(path), "relpath": path.name, "label": label, "sha256": sha256_file(path)})
    manifest = work / "synthetic.parquet"
    pd.DataFrame(rows).to_parquet(manifest)
    reference = ForkReference(config.channels, len(DEMO_CLASSES))
    start = time.perf_counter()
    out = quality_stage(config, split.split_path, manifest, progress=False, reference=FixedReference(reference),
                        extractors=[DomainExtractor(reference.features)])
    seconds = time.perf_counter() - start
    return {"synthetic": synthetic, "size": size, "mode": mode, "real_train": out.summary["real_train"],
            "seconds": round(seconds, 2), "seconds_per_1000": round(seconds * 1000 / synthetic, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", type=int, nargs="+", default=[1000])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--mode", choices=["L", "RGB"], default="L")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.synthetic[0], args.size, args.mode)))
        return
    import torch

    rows = []
    for n in args.synthetic:
        done = subprocess.run([sys.executable, "-m", "benchmarks.bench_quality", "--one", "--synthetic", str(n),
                               "--size", str(args.size), "--mode", args.mode], cwd=ROOT, check=True,
                              capture_output=True, text=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    result = {"machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                          "matmul_gflops": matmul_gflops()},
              "command": "python -m benchmarks.bench_quality " + " ".join(sys.argv[1:]), "rows": rows}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"matmul peak {result['machine']['matmul_gflops']} GFLOP/s, {result['machine']['threads']} threads")
    print(f"{'synthetic':>10} {'size':>5} {'mode':>4} {'real':>5} {'seconds':>8} {'s/1000':>7} {'peak MB':>8}")
    for r in rows:
        print(f"{r['synthetic']:>10} {r['size']:>5} {r['mode']:>4} {r['real_train']:>5} {r['seconds']:>8} "
              f"{r['seconds_per_1000']:>7} {r['peak_rss_mb']:>8}")


if __name__ == "__main__":
    main()
