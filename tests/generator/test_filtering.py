"""The reference filter (issue 21): a wrong class is dropped and replaced, an uncertain right one is kept.

The judge is the real ``FoldModels`` around a fixed linear read-out, so every verdict is known in advance:
it gives class ``a`` a probability of 0.51 for every image (logits 0.04 vs 0), i.e. it is right, though
barely, about every ``a`` image and wrong about every ``b/c`` image.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from gen_helpers import TINY_GENERATOR
from pipeline.config import GeneratorConfig, SynthesisConfig
from pipeline.generator.filtering import filter_by_reference
from pipeline.generator.model import build_unet
from pipeline.generator.pipeline import ClassConditionalPipeline
from pipeline.generator.sampling import make_sampler
from pipeline.generator.synthesis import synthesize
from pipeline.quality.judge import FoldModels

NOISE = {"num_train_timesteps": 100, "beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction"}


class BarelyA(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([[0.04, 0.0]]).expand(len(x), 2) + 0 * x.mean()


def _pipe() -> ClassConditionalPipeline:
    torch.manual_seed(0)
    unet = build_unet(GeneratorConfig(**TINY_GENERATOR), 1, num_classes=2).eval()
    pipe = ClassConditionalPipeline(unet, make_sampler("ddim", NOISE, 3), class_names=["a", "b/c"], mode="L")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_wrong_class_images_are_dropped_and_replaced_up_to_the_cap_and_uncertain_right_ones_stay(tmp_path: Path) -> None:
    judge = FoldModels([BarelyA()], ["a", "b/c"], 16, [0.5], [0.5], [[]])
    config = SynthesisConfig(per_class=3, sampler="ddim", steps=3, batch_size=8)
    calls: list[list[int]] = []

    def generate(totals: list[int]) -> pd.DataFrame:
        calls.append(list(totals))
        return synthesize(_pipe(), tmp_path, config, seed=1, generator_hash="h", progress=False, counts=totals)

    result = filter_by_reference(generate, judge, [3, 3], max_factor=2.0)
    assert calls[0] == [3, 3] and calls[-1] == [3, 6]  # only the short class asks for more, up to 2 x 3
    assert result.per_class == {"a": {"generated": 3, "dropped": 0, "kept": 3, "wanted": 3},
                                "b/c": {"generated": 6, "dropped": 6, "kept": 0, "wanted": 3}}
    assert list(result.manifest["label"]) == ["a"] * 3  # p = 0.51: uncertain, right, kept
    assert len(result.dropped) == 6 and set(result.dropped["predicted"]) == {"a"}
    assert result.dropped["p_intended"].round(2).eq(0.49).all()


def test_a_judge_that_agrees_everywhere_changes_nothing(tmp_path: Path) -> None:
    judge = FoldModels([BarelyA()], ["a", "b/c"], 16, [0.5], [0.5], [[]])
    config = SynthesisConfig(per_class=2, sampler="ddim", steps=3, batch_size=8)

    def generate(totals: list[int]) -> pd.DataFrame:
        return synthesize(_pipe(), tmp_path, config, seed=1, generator_hash="h", progress=False, counts=totals)

    full = generate([2, 0])  # only class a, which the judge always (barely) agrees with
    result = filter_by_reference(generate, judge, [2, 0], 3.0)
    assert result.manifest["sha256"].tolist() == full["sha256"].tolist() and result.dropped.empty
