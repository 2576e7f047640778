"""Oracle test at the edge of the data range: the shipped sampler keeps a -1 / +1 background where it is.

The data (tests/generator/oracle.py) has its background at the range edge, -1 (black MRI
surroundings) or +1 (white smear background), give or take a per-image level; the denoiser is exact
up to a small added error, like a trained model. The shipped defaults (the cpu profile's sampler, steps
and guidance, the default prediction type and x0 handling) must return the data's mean background
level within TOLERANCE. Before issue 8 the sampler hard-clipped every intermediate x0 prediction to
[-1, 1] with epsilon prediction and "linspace" DPM timesteps: ``test_todays_sampler_fails_the_oracle``
keeps the proof that this test catches that sampler (measured: 0.10 off at -1 and 0.04 at +1, against
0.02 for the shipped settings; 12 images, so ~0.025 of the deviation is the sample's own spread).
"""

from __future__ import annotations

import pytest

from oracle import background_mask, expected_background, oracle_generator
from pipeline.config import load_domain_config
from pipeline.generator.synthesis import render

TOLERANCE = 0.05  # in [-1, 1] units: 2.5% of the 0-255 range, ~6 gray levels
ERROR = 0.05  # the denoiser's added error, in units of its output (epsilon or v)
CASES = [(-1.0, 0.5), (1.0, -0.2)]  # (background edge, foreground)


def _background_mean(prediction_type: str, edge: float, foreground: float, synthesis) -> float:
    gen = oracle_generator(prediction_type, edge, foreground, ERROR)
    labels = [i % 2 for i in range(12)]
    out = render(gen, labels, list(range(12)), synthesis).float() / 127.5 - 1  # uint8 back to [-1, 1]
    return float(out[:, 0][:, background_mask()].mean())


@pytest.mark.parametrize(("edge", "foreground"), CASES)
def test_shipped_sampler_keeps_the_background_at_the_range_edge(edge: float, foreground: float) -> None:
    config = load_domain_config("demo", "cpu")
    mean = _background_mean(config.generator.prediction_type, edge, foreground, config.synthesis)
    assert abs(mean - expected_background(edge)) <= TOLERANCE, (
        f"background {expected_background(edge):+.3f} sampled at {mean:+.3f} (tolerance {TOLERANCE}) with "
        f"{config.synthesis.sampler}, guidance {config.synthesis.guidance_scale}, x0_clip {config.synthesis.x0_clip}")


def test_todays_sampler_fails_the_oracle() -> None:
    config = load_domain_config("demo", "cpu")
    today = config.synthesis.model_copy(update={"x0_clip": "clip", "timestep_spacing": "linspace"})
    errors = [abs(_background_mean("epsilon", edge, fg, today) - expected_background(edge)) for edge, fg in CASES]
    assert max(errors) > TOLERANCE, f"the pre-issue-8 sampler passed the oracle (errors {errors}): the test has no power"
