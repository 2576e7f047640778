"""Sampling and synthesis through the exported pipeline: per-image seeding, every sampler, gap filling, modes kept."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from gen_helpers import TINY_GENERATOR
from pipeline.config import GeneratorConfig, SynthesisConfig
from pipeline.generator.model import build_unet
from pipeline.generator.pipeline import ClassConditionalPipeline
from pipeline.generator.sampling import image_seed, make_sampler
from pipeline.generator.synthesis import image_relpath, render, synthesize

NOISE = {"num_train_timesteps": 100, "beta_schedule": "squaredcos_cap_v2", "prediction_type": "epsilon"}


def _pipeline(channels: int, mode: str, sampler: str = "ddim", steps: int = 3) -> ClassConditionalPipeline:
    torch.manual_seed(0)
    model = build_unet(GeneratorConfig(**TINY_GENERATOR), channels, num_classes=2).eval()
    pipe = ClassConditionalPipeline(model, make_sampler(sampler, NOISE, steps), class_names=["a", "b/c"], mode=mode)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _seeded(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.mark.parametrize(("sampler", "steps"), [("sde-dpmsolver++", 4), ("dpmsolver++", 4), ("ddim", 4), ("ddpm", 100)])
@pytest.mark.parametrize("guidance", [0.0, 1.0, 3.0])
def test_every_sampler_and_guidance_gives_images_not_all_clipped(sampler: str, steps: int, guidance: float) -> None:
    """The output is clamped to [0, 1], so a range check alone cannot fail; what can is images that are
    all clipped or flat. This untrained UNet leaves 9-85% of the pixels strictly inside (0, 1)
    depending on the sampler (measured); whether a sampler lands on the data is the oracle test below."""
    pipe = _pipeline(1, "L", sampler, steps)
    out = pipe(["a", 1], steps, guidance, _seeded(1, 2), output_type="np").images
    assert out.shape == (2, 16, 16, 1) and out.dtype == np.float32 and np.isfinite(out).all()
    inside = float(((out > 0) & (out < 1)).mean())
    assert inside > 0.02, f"only {inside:.1%} of the pixels are not clipped at 0 or 1"
    assert out.std() > 0.05 and out.reshape(2, -1).std(axis=1).min() > 0.02  # not a flat image


def test_output_types_agree_and_keep_mode_and_size() -> None:
    rgb = _pipeline(3, "RGB")
    tensor = rgb([0, "b/c"], generator=_seeded(3, 4), output_type="pt").images
    array = rgb([0, "b/c"], generator=_seeded(3, 4), output_type="np").images
    images = rgb([0, "b/c"], generator=_seeded(3, 4), output_type="pil").images
    assert tensor.shape == (2, 3, 16, 16) and tensor.dtype == torch.float32
    np.testing.assert_array_equal(tensor.permute(0, 2, 3, 1).numpy(), array)
    assert [im.mode for im in images] == ["RGB", "RGB"] and images[0].size == (16, 16)
    np.testing.assert_array_equal(np.asarray(images[1]), (array[1] * 255).round().astype(np.uint8))
    grey = _pipeline(1, "L")(["b/c"], generator=_seeded(3)).images[0]
    assert grey.mode == "L" and np.asarray(grey).shape == (16, 16)
    with pytest.raises(ValueError, match="not one of this generator's classes: a, b/c"):
        rgb(["c"])
    with pytest.raises(ValueError, match="one per image"):
        rgb([0, 1], generator=_seeded(1))


def test_each_image_has_its_own_noise_and_is_reproducible_in_any_batch() -> None:
    pipe = _pipeline(1, "L")
    seeds = {image_seed(7, c, i) for c in range(4) for i in range(100)}
    assert len(seeds) == 400  # classes never share noise
    ddim3 = SynthesisConfig(sampler="ddim", steps=3, guidance_scale=2.0)
    together = render(pipe, [0, 1, 0], [image_seed(7, 0, 0), image_seed(7, 1, 0), image_seed(7, 0, 1)], ddim3).numpy()
    alone = render(pipe, [1], [image_seed(7, 1, 0)], ddim3).numpy()
    assert np.abs(together[1].astype(int) - alone[0].astype(int)).max() <= 1  # same image, any batch
    assert not np.array_equal(together[0], together[2])


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("channels", "mode"), [(1, "L"), (3, "RGB")])
def test_resume_fills_gaps_exactly_to_n_per_class_and_keeps_the_mode(tmp_path: Path, channels: int,
                                                                      mode: str) -> None:
    gen = _pipeline(channels, mode)
    small = SynthesisConfig(per_class=3, sampler="ddim", steps=3, guidance_scale=2.0, batch_size=4)
    first = synthesize(gen, tmp_path, small, seed=5, generator_hash="h", progress=False)
    assert first["label"].value_counts().to_dict() == {"a": 3, "b/c": 3}
    before = _digests(tmp_path / "images")

    # simulate a killed run: one image missing, a stale temporary left by SIGKILL
    gone = tmp_path / image_relpath(1, "b/c", 1)
    gone.unlink()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a writer that is gone: its temporary is debris
    (gone.parent / f".00001.png.{dead.pid}-abc.tmp").write_bytes(b"partial")
    live = gone.parent / f".00002.png.{os.getppid()}-xyz.tmp"  # another live process's in-flight file
    live.write_bytes(b"in flight")
    bigger = SynthesisConfig(per_class=4, sampler="ddim", steps=3, guidance_scale=2.0, batch_size=4)
    manifest = synthesize(gen, tmp_path, bigger, seed=5, generator_hash="h", progress=False)

    assert list(tmp_path.rglob("*.tmp")) == [live]
    live.unlink()
    after = _digests(tmp_path / "images")
    assert len(after) == 8
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

        self.config = SimpleNamespace(sample_size=8, in_channels=1, num_class_embeds=3)
        self.anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)
        self.alphas = DDPMScheduler(**noise).alphas_cumprod
        self.prediction_type = noise["prediction_type"]

    device = property(lambda self: self.anchor.device)
    dtype = property(lambda self: self.anchor.dtype)

    def forward(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor):
        a = self.alphas[int(t)]
        x0 = torch.where(class_labels == 0, -0.5, 0.5).float()[:, None, None, None].expand_as(x)
        eps = 0.97 * (x - a.sqrt() * x0) / (1 - a).sqrt()
        out = eps if self.prediction_type == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * x0
        return SimpleNamespace(sample=out)


@pytest.mark.parametrize("schedule", ["squaredcos_cap_v2", "linear"])
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize(("sampler", "steps"), [("sde-dpmsolver++", 20), ("dpmsolver++", 20), ("ddim", 20),
                                                ("ddpm", 1000)])
def test_samplers_recover_the_data_from_a_good_denoiser(schedule: str, prediction: str, sampler: str,
                                                           steps: int) -> None:
    noise = {"num_train_timesteps": 1000, "beta_schedule": schedule, "prediction_type": prediction}
    pipe = ClassConditionalPipeline(OracleUNet(noise), make_sampler(sampler, noise, steps), ["low", "high"], "L")
    pipe.set_progress_bar_config(disable=True)
    out = pipe(["low", "high"], steps, 1.0, _seeded(1, 2), output_type="pt").images
    # data -0.5 / +0.5 is 0.25 / 0.75 in the output range [0, 1]
    assert (out[0] - 0.25).abs().max() < 0.025 and (out[1] - 0.75).abs().max() < 0.025


def test_per_class_multiple_follows_each_class_count_in_the_real_sample(tmp_path: Path) -> None:
    """3 real images of class a and 1 of class b at a multiple of 2: 6 and 2 synthetic images; the set is the
    per_class set's first images (same seeds), and it has its own key."""
    from pipeline.generator.synthesis import RealSample, class_counts

    gen = _pipeline(1, "L")
    real = RealSample(torch.zeros(4, 1, 16, 16, dtype=torch.uint8), torch.tensor([0, 0, 0, 1]),
                      [f"{i:064x}" for i in range(4)])
    twice = SynthesisConfig(per_class_multiple=2.0, sampler="ddim", steps=3, guidance_scale=2.0, batch_size=4)
    assert class_counts(twice, ["a", "b/c"], real) == [6, 2]
    assert class_counts(twice.model_copy(update={"per_class_multiple": 0.1}), ["a", "b/c"], real) == [1, 1]
    manifest = synthesize(gen, tmp_path / "m", twice, seed=5, generator_hash="h", progress=False, real=real)
    assert manifest["label"].value_counts().to_dict() == {"a": 6, "b/c": 2}
    flat = synthesize(gen, tmp_path / "f", twice.model_copy(update={"per_class_multiple": None, "per_class": 2}),
                      seed=5, generator_hash="h", progress=False, real=real)
    same = manifest.merge(flat, on=["label", "index"])  # image i of a class is the same picture in both sets
    assert len(same) == 4 and (same["sha256_x"] == same["sha256_y"]).all()
    with pytest.raises(ValueError, match="per_class_multiple needs the real training sample"):
        synthesize(gen, tmp_path / "x", twice, seed=5, generator_hash="h", progress=False)
