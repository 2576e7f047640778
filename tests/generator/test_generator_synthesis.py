"""Sampling and synthesis: per-image seeding, every sampler, gap filling to exactly N, modes kept."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gen_helpers import TINY_GENERATOR
from pipeline.config import GeneratorConfig, SynthesisConfig
from pipeline.generator.model import build_unet
from pipeline.generator.sampling import LoadedGenerator, image_seed, sample
from pipeline.generator.synthesis import image_relpath, synthesize

NOISE = {"num_train_timesteps": 100, "beta_schedule": "squaredcos_cap_v2", "prediction_type": "epsilon"}


def _generator(channels: int, mode: str) -> LoadedGenerator:
    torch.manual_seed(0)
    model = build_unet(GeneratorConfig(**TINY_GENERATOR), channels, num_classes=2).eval()
    return LoadedGenerator(model, ["a", "b/c"], channels, mode, 16, NOISE, {})


@pytest.mark.parametrize(("sampler", "steps"), [("sde-dpmsolver++", 4), ("dpmsolver++", 4), ("ddim", 4), ("ddpm", 100)])
@pytest.mark.parametrize("guidance", [0.0, 1.0, 3.0])
def test_every_sampler_and_guidance_gives_images_in_range(sampler: str, steps: int, guidance: float) -> None:
    out = sample(_generator(1, "L"), [0, 1], [1, 2], sampler, steps, guidance)
    assert out.shape == (2, 1, 16, 16) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.min() >= -1 and out.max() <= 1


def test_each_image_has_its_own_noise_and_is_reproducible_in_any_batch() -> None:
    gen = _generator(1, "L")
    seeds = {image_seed(7, c, i) for c in range(4) for i in range(100)}
    assert len(seeds) == 400  # classes never share noise
    together = sample(gen, [0, 1, 0], [image_seed(7, 0, 0), image_seed(7, 1, 0), image_seed(7, 0, 1)], "ddim", 3)
    alone = sample(gen, [1], [image_seed(7, 1, 0)], "ddim", 3)
    torch.testing.assert_close(together[1:2], alone, rtol=1e-4, atol=1e-4)


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("channels", "mode"), [(1, "L"), (3, "RGB")])
def test_resume_fills_gaps_exactly_to_n_per_class_and_keeps_the_mode(tmp_path: Path, channels: int,
                                                                      mode: str) -> None:
    gen = _generator(channels, mode)
    small = SynthesisConfig(per_class=3, sampler="ddim", steps=3, guidance_scale=2.0, batch_size=4)
    first = synthesize(gen, tmp_path, small, seed=5, generator_hash="h", progress=False)
    assert first["label"].value_counts().to_dict() == {"a": 3, "b/c": 3}
    before = _digests(tmp_path / "images")

    # simulate a killed run: one image missing, a stale temporary left by SIGKILL
    gone = tmp_path / image_relpath("b/c", 1)
    gone.unlink()
    (gone.parent / ".00001.png.abc.tmp").write_bytes(b"partial")
    bigger = SynthesisConfig(per_class=4, sampler="ddim", steps=3, guidance_scale=2.0, batch_size=4)
    manifest = synthesize(gen, tmp_path, bigger, seed=5, generator_hash="h", progress=False)

    after = _digests(tmp_path / "images")
    assert len(after) == 8 and not list(tmp_path.rglob("*.tmp"))
    assert {k: after[k] for k in before} == before  # refilled image is identical, others untouched
    assert manifest["label"].value_counts().to_dict() == {"a": 4, "b/c": 4}
    assert manifest["path"].is_unique and manifest["seed"].is_unique
    assert set(manifest.columns) >= {"path", "relpath", "label", "sha256", "seed", "sampler", "steps",
                                     "guidance_scale", "generator_hash"}
    for row in manifest.itertuples():
        assert hashlib.sha256(Path(row.path).read_bytes()).hexdigest() == row.sha256
        with Image.open(row.path) as image:
            assert image.mode == mode and image.size == (16, 16)
    if mode == "L":
        assert np.asarray(Image.open(manifest["path"][0])).ndim == 2


class OracleUNet(torch.nn.Module):
    """A near-exact denoiser of a two-point data set (class 0 is all -0.5, class 1 all +0.5).

    Its noise estimate is 3% off, like a trained model's: a sampler must tolerate that and land on
    the requested class's image, for either schedule and prediction type (a solver that divides by
    alpha_bar(T) ~ 0 with the cosine schedule blows that error up into salt-and-pepper noise)."""

    def __init__(self, noise: dict) -> None:
        super().__init__()
        from diffusers import DDPMScheduler

        self.anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)
        self.alphas = DDPMScheduler(**noise).alphas_cumprod
        self.prediction_type = noise["prediction_type"]

    def forward(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor):
        a = self.alphas[int(t)]
        x0 = torch.where(class_labels == 0, -0.5, 0.5).float()[:, None, None, None].expand_as(x)
        eps = 0.97 * (x - a.sqrt() * x0) / (1 - a).sqrt()
        out = eps if self.prediction_type == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * x0
        return type("Out", (), {"sample": out})()


@pytest.mark.parametrize("schedule", ["squaredcos_cap_v2", "linear"])
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize(("sampler", "steps"), [("dpmsolver++", 20), ("ddim", 20), ("ddpm", 1000)])
def test_samplers_recover_the_data_from_a_good_denoiser(schedule: str, prediction: str, sampler: str,
                                                           steps: int) -> None:
    noise = {"num_train_timesteps": 1000, "beta_schedule": schedule, "prediction_type": prediction}
    gen = LoadedGenerator(OracleUNet(noise), ["low", "high"], 1, "L", 8, noise, {})
    out = sample(gen, [0, 1], [1, 2], sampler, steps, guidance_scale=1.0)
    assert (out[0] - (-0.5)).abs().max() < 0.05 and (out[1] - 0.5).abs().max() < 0.05
