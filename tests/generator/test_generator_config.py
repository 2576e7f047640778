"""Bad generator and synthesis settings fail early with a message that names the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import main
from pipeline.config import GeneratorConfig, load_domain_config
from pipeline.errors import ConfigError
from pipeline.generator.model import unet_config
from pipeline.generator.sampling import make_sampler


@pytest.mark.parametrize(("override", "message"), [
    ({"synthesis": {"steps": -5}}, "synthesis.steps = -5 is invalid; expected an integer >= 1"),
    ({"synthesis": {"guidance_scale": -1.0}}, "synthesis.guidance_scale = -1.0 is invalid"),
    ({"synthesis": {"sampler": "euler"}}, "synthesis.sampler = 'euler' is not allowed; allowed values: "
                                          "'sde-dpmsolver++', 'dpmsolver++', 'ddim', 'ddpm'"),
    ({"synthesis": {"per_class": 0}}, "synthesis.per_class = 0 is invalid"),
    ({"generator": {"train_steps": -1}}, "generator.train_steps = -1 is invalid; expected an integer >= 1"),
    ({"generator": {"image_size": 20}}, "generator.image_size = 20 is invalid; expected a multiple of 8"),
    ({"generator": {"class_dropout": 1.5}}, "generator.class_dropout = 1.5 is invalid"),
    ({"generator": {"prediction_type": "sample"}}, "generator.prediction_type = 'sample' is not allowed"),
    ({"generator": {"block_out_channels": [32, 12]}}, "generator.block_out_channels = [32, 12] is invalid"),
])
def test_bad_values_name_the_key(override: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_domain_config("demo", "cpu", override)
    assert message in str(info.value)


def test_zero_classes_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="number of classes = 0 is invalid; expected at least 1 class"):
        unet_config(GeneratorConfig(), channels=1, num_classes=0)


def test_sampler_rejects_unknown_names_and_step_counts() -> None:
    noise = {"num_train_timesteps": 100, "beta_schedule": "linear", "prediction_type": "epsilon"}
    with pytest.raises(ConfigError, match="synthesis.sampler = 'euler' is invalid; expected one of sde-dpmsolver"):
        make_sampler("euler", noise, 10)
    with pytest.raises(ConfigError, match="synthesis.steps = 500 is invalid; expected 1..100"):
        make_sampler("ddim", noise, 500)


def test_cli_reports_bad_generator_values_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["generator", "sample", "--domain", "demo", "--data", str(tmp_path), "--runs-root", str(tmp_path),
                 "--set", "synthesis.guidance_scale=-2"])
    assert code == 2
    assert "synthesis.guidance_scale = -2 is invalid; expected a number >= 0" in capsys.readouterr().err


@pytest.mark.parametrize("action", ["train", "sample", "grid"])
def test_generator_subcommands_have_help(action: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["generator", action, "--help"])
    assert info.value.code == 0
    assert "--domain" in capsys.readouterr().out
