"""The sampler oracle: how each x0 handling moves a background at the data-range edge (no training).

    PYTHONPATH=. python benchmarks/sampler_oracle.py

Uses tests/generator/oracle.py (exact denoiser of a known distribution plus a small error in its
output) and prints, per prediction type, edge, error size, x0_clip and timestep spacing, the sampled
background mean against the data's. Results: benchmarks/results/ablation/sampler-oracle.md.
"""
import sys
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "tests" / "generator"))
from oracle import oracle_generator, background_mask, expected_background
from pipeline.generator.synthesis import render
from pipeline.config import SynthesisConfig
n = 12
labels = [i % 2 for i in range(n)]; seeds = list(range(n))
mask = background_mask()
for pred in ["epsilon", "v_prediction"]:
    for bg, fg in [(-1.0, 0.5), (1.0, -0.2)]:
        exp = expected_background(bg)
        for err in [0.02, 0.05, 0.1]:
            for clip in ["clip", "dynamic", "off"]:
                for spacing in ["linspace", "trailing"]:
                    for g in [2.0]:
                        cfg = SynthesisConfig(x0_clip=clip, timestep_spacing=spacing, guidance_scale=g, steps=20)
                        out = render(oracle_generator(pred, bg, fg, err), labels, seeds, cfg).float() / 127.5 - 1
                        m = out[:, 0][:, mask].mean().item()
                        print(f"{pred:12s} bg={bg:+.0f} exp={exp:+.3f} err={err} clip={clip:8s} {spacing:9s} g={g} bg_mean={m:+.3f} dev={abs(m-exp):.3f}", flush=True)
