"""The diversity options of the sampling loop (issue 21), each against an oracle that holds exactly.

- a guidance interval that covers every noise level is plain guidance; an empty one is the conditional
  model (w = 1), and the UNet is then called once per step, not twice;
- a guidance range (w, w) is guidance w; per-image draws do not depend on the batch;
- CADS at full strength with psi = 0 replaces the class embedding by noise: both classes give the same image;
- autoguidance by a guide identical to the model is the conditional model, whatever w;
- the options travel with the export (save_pretrained / from_pretrained) and old folders still load.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gen_helpers import TINY_GENERATOR
from pipeline.config import GeneratorConfig
from pipeline.generator.model import build_unet
from pipeline.generator.pipeline import ClassConditionalPipeline
from pipeline.generator.sampling import make_sampler

NOISE = {"num_train_timesteps": 100, "beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction"}


def _unet(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_unet(GeneratorConfig(**TINY_GENERATOR), 1, num_classes=2).eval()


def _pipe(guide: torch.nn.Module | None = None, **options: object) -> ClassConditionalPipeline:
    pipe = ClassConditionalPipeline(_unet(), make_sampler("sde-dpmsolver++", NOISE, 6), class_names=["a", "b"],
                                    mode="L", guide_unet=guide, sampling_options=options or None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def _run(pipe: ClassConditionalPipeline, labels: list, w: float = 3.0, seeds: tuple = (1, 2), **kw: object) -> np.ndarray:
    return pipe(labels, num_inference_steps=6, guidance_scale=w, generator=_gens(*seeds), output_type="np", **kw).images


def _count_calls(pipe: ClassConditionalPipeline) -> list[int]:
    """Batch size of every UNet call (a doubled batch is a guided step)."""
    sizes: list[int] = []
    pipe.unet.register_forward_pre_hook(lambda _m, args, kwargs=None: sizes.append(int(args[0].shape[0])))
    return sizes


def test_a_guidance_interval_over_every_noise_level_is_plain_guidance_and_an_empty_one_is_no_guidance() -> None:
    pipe = _pipe()
    guided, unguided = _run(pipe, ["a", "b"]), _run(pipe, ["a", "b"], w=1.0)
    np.testing.assert_array_equal(_run(pipe, ["a", "b"], guidance_interval=(0.0, 1e9)), guided)
    np.testing.assert_array_equal(_run(pipe, ["a", "b"], guidance_interval=(0.0, 0.0)), unguided)
    assert not np.array_equal(guided, unguided)


def test_guidance_runs_only_at_the_noise_levels_inside_the_interval() -> None:
    pipe = _pipe()
    scheduler = pipe.scheduler
    scheduler.set_timesteps(6)
    sigmas = [float(((1 - scheduler.alphas_cumprod[int(t)]) / scheduler.alphas_cumprod[int(t)]) ** 0.5)
              for t in scheduler.timesteps]
    rising = sorted(sigmas)
    low, high = (rising[1] + rising[2]) / 2, (rising[4] + rising[5]) / 2  # 3 of the 6 steps, no ties
    sizes = _count_calls(pipe)
    _run(pipe, ["a", "b"], guidance_interval=(low, high))
    expected = [4 if low < s <= high else 2 for s in sigmas]
    assert sizes == expected and expected.count(4) == 3


def test_a_guidance_range_of_one_value_is_that_guidance_and_draws_are_per_image() -> None:
    pipe = _pipe()
    np.testing.assert_array_equal(_run(pipe, ["a", "b"], guidance_range=(3.0, 3.0)), _run(pipe, ["a", "b"]))
    together = _run(pipe, ["a", "b", "a"], seeds=(1, 2, 3), guidance_range=(0.0, 6.0))
    alone = _run(pipe, ["b"], seeds=(2,), guidance_range=(0.0, 6.0))
    assert np.abs(together[1] - alone[0]).max() < 1e-5  # the same image and weight in any batch
    assert not np.allclose(together, _run(pipe, ["a", "b", "a"], seeds=(1, 2, 3)))


def test_cads_at_full_strength_without_rescaling_erases_the_class() -> None:
    pipe = _pipe()
    # tau2 ~ 0: every step is above it, the condition is pure noise; psi 0 keeps it unrescaled
    options = {"cads_noise_scale": 1.0, "cads_interval": (0.0, 1e-6), "cads_psi": 0.0}
    a = _run(pipe, ["a"], w=1.0, seeds=(5,), **options)
    b = _run(pipe, ["b"], w=1.0, seeds=(5,), **options)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(_run(pipe, ["a"], w=1.0, seeds=(5,)), _run(pipe, ["b"], w=1.0, seeds=(5,)))
    assert not pipe.unet.class_embedding._forward_hooks  # the hook lives for one step only


def test_cads_changes_images_only_inside_its_interval_and_is_reproducible() -> None:
    pipe = _pipe()
    plain = _run(pipe, ["a", "b"])
    np.testing.assert_array_equal(_run(pipe, ["a", "b"], cads_noise_scale=0.0), plain)
    np.testing.assert_array_equal(_run(pipe, ["a", "b"], cads_noise_scale=0.5, cads_interval=(1.0, 1.0)), plain)
    annealed = _run(pipe, ["a", "b"], cads_noise_scale=0.5)
    np.testing.assert_array_equal(_run(pipe, ["a", "b"], cads_noise_scale=0.5), annealed)
    assert not np.array_equal(annealed, plain)


def test_autoguidance_by_an_identical_guide_is_the_conditional_model_and_a_weaker_guide_is_not() -> None:
    same = _pipe(guide=copy.deepcopy(_unet()))
    conditional = _run(same, ["a", "b"], w=1.0)
    np.testing.assert_allclose(_run(same, ["a", "b"], w=4.0, guidance_method="autoguidance"), conditional, atol=1e-5)
    weaker = _pipe(guide=_unet(seed=1))
    assert np.abs(_run(weaker, ["a", "b"], w=4.0, guidance_method="autoguidance") - conditional).max() > 0.01
    with pytest.raises(ValueError, match="needs a guide_unet"):
        _run(_pipe(), ["a"], seeds=(1,), guidance_method="autoguidance")


def test_bad_options_are_refused_in_words() -> None:
    pipe = _pipe()
    with pytest.raises(ValueError, match="guidance_interval"):
        _run(pipe, ["a"], seeds=(1,), guidance_interval=(2.0, 1.0))
    with pytest.raises(ValueError, match="guidance_method"):
        _run(pipe, ["a"], seeds=(1,), guidance_method="perp")
    with pytest.raises(ValueError, match="unknown sampling options"):
        _pipe(guidance_intervall=(0, 1))


def test_options_and_guide_travel_with_the_export_and_old_folders_still_load(tmp_path: Path) -> None:
    options = {"guidance_interval": [0.3, 5.0], "cads_noise_scale": 0.25, "guidance_method": "autoguidance"}
    pipe = _pipe(guide=_unet(seed=1), **options)
    expected = pipe(["a", "b"], 6, generator=_gens(1, 2), output_type="np").images
    pipe.save_pretrained(tmp_path / "new")
    loaded = ClassConditionalPipeline.from_pretrained(tmp_path / "new")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.config.sampling_options == options and loaded.guide_unet is not None
    np.testing.assert_allclose(loaded(["a", "b"], 6, generator=_gens(1, 2), output_type="np").images, expected, atol=1e-6)

    plain = _pipe()
    plain.save_pretrained(tmp_path / "old")
    index = json.loads((tmp_path / "old" / "model_index.json").read_text())
    index.pop("guide_unet", None)  # a folder written before issue 21
    (tmp_path / "old" / "model_index.json").write_text(json.dumps(index))
    old = ClassConditionalPipeline.from_pretrained(tmp_path / "old")
    old.set_progress_bar_config(disable=True)
    assert old.guide_unet is None
    np.testing.assert_array_equal(_run(old, ["a", "b"]), _run(plain, ["a", "b"]))


def test_a_generator_keeps_its_guide_step_and_autoguided_synthesis_uses_it(tmp_path: Path) -> None:
    """generator.guide_step keeps that step's EMA weights (never pruned), the export carries them as guide_unet,
    and synthesis with guidance_method autoguidance samples with them under its own key."""
    from gen_helpers import tiny_config, toy_training_data
    from pipeline.generator.checkpoint import guide_path, list_checkpoints
    from pipeline.generator.stage import synthesis_key
    from pipeline.generator.synthesis import render
    from pipeline.generator.train import train_generator

    config = tiny_config(tmp_path, {"train_steps": 6, "checkpoint_every": 2, "keep_checkpoints": 1, "guide_step": 2},
                         synthesis={"guidance_method": "autoguidance", "steps": 4, "sampler": "ddim"})
    result = train_generator(config, toy_training_data(), tmp_path / "run", "split", progress=False)
    ckpts = tmp_path / "run" / "checkpoints"
    assert [s for s, _ in list_checkpoints(ckpts)] == [6] and guide_path(ckpts, 2).is_file()
    pipe = ClassConditionalPipeline.from_pretrained(result.model_path)
    pipe.set_progress_bar_config(disable=True)
    guide = torch.load(guide_path(ckpts, 2), weights_only=True)["ema"]
    for name, value in pipe.guide_unet.state_dict().items():
        torch.testing.assert_close(value, guide[name])
    assert any(not torch.equal(v, pipe.unet.state_dict()[k]) for k, v in pipe.guide_unet.state_dict().items())
    auto = render(pipe, [0, 1], [1, 2], config.synthesis)
    cfg = render(pipe, [0, 1], [1, 2], config.synthesis.model_copy(update={"guidance_method": "cfg"}))
    assert not torch.equal(auto, cfg)
    plain = config.model_copy(update={"synthesis": config.synthesis.model_copy(update={"guidance_method": "cfg"})})
    assert synthesis_key(config, "g") != synthesis_key(plain, "g")
