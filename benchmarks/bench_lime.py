"""LIME cost per image: LIME's defaults vs the batched explainer, at the same explanation.

    python -m benchmarks.bench_lime                    # cpu profile (64 px, 300 samples) and the issue's 128 px / 1000
    python -m benchmarks.bench_lime --images 2 --cases 64:300   (from the repository root)

"defaults" is ``lime.lime_image.LimeImageExplainer`` as shipped: perturbed images built one at a
time in Python, the model called in batches of 10 (our wrapper: evaluation preprocessing under
``torch.inference_mode()``, the plain eval-mode model). "batched" is what the explain stage does
(``reports.lime_explain.explain(..., batched=True)``): ``BatchedLimeImageExplainer`` draws the same
random perturbations from the same random state and builds them vectorised, the model is called on
``report.batch_size`` images at a time, and on a CPU it is the traced, frozen, inference-optimised
copy of the same weights (BatchNorm folded, oneDNN kernels). Same SLIC superpixels, so the
explanations must agree; the script checks that they do (max |weight difference|).
The model is a from-scratch resnet18 (1 channel, 4 classes): LIME's cost does not depend on what
the weights learned. Images are brain-MRI slices from ../shared/data when present, else phantoms.
Prints a table and writes benchmarks/results/lime.json and lime.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))  # the checkout this script sits in, not an installed copy

from benchmarks.bench_quality import matmul_gflops  # noqa: E402 - the same machine-speed probe as the others


def images(count: int, size: int):
    import numpy as np
    import torch

    from pipeline.image_tensors import square_resize
    from pipeline.imageio import read_image

    data = ROOT.parent / "shared" / "data" / "brain-mri"
    if not data.is_dir():
        data = Path("/work/shared/data/brain-mri")
    found = sorted(data.glob("*/*.jpg")) if data.is_dir() else []
    paths = found[:: max(1, len(found) // max(count, 1))][:count]
    if len(paths) < count:
        import tempfile

        from pipeline.demo_data import PhantomSpec, make_demo_dataset

        folder = make_demo_dataset(Path(tempfile.mkdtemp()) / "phantoms", PhantomSpec(count, size, "L", 0),
                                   progress=False)
        paths = sorted(Path(folder).glob("*/*.png"))[:count]
        source = "phantoms"
    else:
        source = "brain-mri"
    pixels = [square_resize(read_image(p, "L").pixels, size) for p in paths]
    return [torch.from_numpy(np.asarray(p)[None].copy()) for p in pixels], source


def run_case(size: int, num_samples: int, count: int, threads: int, batch_size: int) -> dict[str, object]:
    import numpy as np
    import torch

    from timm.data import resolve_input_data_config

    from classifiers import zoo
    from classifiers.data import BatchMaker
    from pipeline.config import ClassifierConfig, load_domain_config
    from reports.lime_explain import FittedClassifier, explain, settings_with

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = zoo.create("resnet18", 1, 4).eval()
    data_config = resolve_input_data_config(model)  # as classifiers/train.py: the weights' mean/std
    mean, std = list(data_config["mean"]), list(data_config["std"])
    classifier = FittedClassifier(model, BatchMaker(mean, std, ClassifierConfig(), augment=False),
                                  ["a", "b", "c", "d"], "L", size, torch.device("cpu"))
    settings = settings_with(load_domain_config("brain-mri", "cpu").report, num_samples=num_samples,
                             batch_size=batch_size)
    pictures, source = images(count, size)
    explain(classifier, pictures[0], [0], settings, seed=0)  # warm-up (allocator, first conv plans)
    timings: dict[str, list[float]] = {"defaults": [], "batched": []}
    max_diff, segments = 0.0, []
    for index, picture in enumerate(pictures):
        results = {}
        for mode in ("defaults", "batched"):
            start = time.perf_counter()
            results[mode] = explain(classifier, picture, [0, 1], settings, seed=index, batched=mode == "batched")
            timings[mode].append(time.perf_counter() - start)
        assert np.array_equal(results["defaults"].segments, results["batched"].segments)
        for label in (0, 1):
            max_diff = max(max_diff, float(np.abs(results["defaults"].weights[label]
                                                  - results["batched"].weights[label]).max()))
        segments.append(int(results["batched"].segments.max()) + 1)
    per_image = {mode: sum(values) / len(values) for mode, values in timings.items()}
    return {"image_size": size, "num_samples": num_samples, "images": count, "image_source": source,
            "segmentation": f"{settings.segmentation} n_segments={settings.n_segments}",
            "mean_superpixels": round(sum(segments) / len(segments), 1),
            "defaults_s_per_image": round(per_image["defaults"], 3), "batched_s_per_image": round(per_image["batched"], 3),
            "batched_batch_size": settings.batch_size, "speedup": round(per_image["defaults"] / per_image["batched"], 2),
            "max_abs_weight_difference": max_diff, "timings": timings}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=["64:300", "128:1000"],
                        help="SIZE:NUM_SAMPLES pairs (default: the cpu profile's 64 px / 300 and the issue's 128 px / 1000)")
    parser.add_argument("--images", type=int, default=3, help="images per case (default 3)")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--batch-size", type=int, default=None,
                        help="perturbed images per model call in the batched run (default: the cpu profile's)")
    parser.add_argument("--out", default=str(RESULTS / "lime.json"))
    args = parser.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch

    from pipeline.config import load_domain_config

    torch.set_num_threads(args.threads)
    peak = matmul_gflops()
    rows = []
    for case in args.cases:
        size, samples = (int(x) for x in case.split(":"))
        batch = args.batch_size or load_domain_config("brain-mri", "cpu").report.batch_size
        rows.append(run_case(size, samples, args.images, args.threads, batch))
        r = rows[-1]
        print(f"{r['image_size']:>4} px {r['num_samples']:>5} samples  defaults {r['defaults_s_per_image']:7.3f} s/img  "
              f"batched {r['batched_s_per_image']:7.3f} s/img  speed-up {r['speedup']:5.2f}x  "
              f"max|dw| {r['max_abs_weight_difference']:.2e}  superpixels {r['mean_superpixels']}", flush=True)
    payload = {"command": " ".join(["python -m benchmarks.bench_lime", *(argv if argv is not None else sys.argv[1:])]),
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
                          f"{args.threads}", "matmul_gflops": round(peak, 1), "model": "resnet18 (from scratch, 1 channel)",
               "cases": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    lines = ["# LIME: defaults vs batched (same explanation)", "",
             f"`{payload['command']}` on {payload['machine']} (fp32 matmul {payload['matmul_gflops']} GFLOP/s), "
             f"{payload['model']}, SLIC superpixels on the grayscale image rendered to 3 channels.", "",
             "| size | samples | images | superpixels | LIME defaults s/image | batched s/image | speed-up | max abs weight diff |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['image_size']} px | {r['num_samples']} | {r['images']} ({r['image_source']}) | {r['mean_superpixels']} "
              f"| {r['defaults_s_per_image']:.3f} | {r['batched_s_per_image']:.3f} | {r['speedup']:.2f}x "
              f"| {r['max_abs_weight_difference']:.1e} |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
