"""v-prediction / Min-SNR weighting, an EMA that reaches its configured decay, legacy keys, continued runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers.training_utils import EMAModel, compute_snr

from gen_helpers import tiny_config, toy_training_data, write_toy_folder
from pipeline.config import GENERATOR_LEGACY_VALUES, GeneratorConfig
from pipeline.errors import ConfigError
from pipeline.generator.checkpoint import list_checkpoints
from pipeline.generator.stage import generator_key, train_generator_stage
from pipeline.generator.train import GeneratorTrainer, train_generator
from pipeline.stages import ingest_stage, split_stage


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_min_snr_weights_follow_diffusers_training_example(tmp_path: Path, prediction: str) -> None:
    config = tiny_config(tmp_path, {"prediction_type": prediction, "snr_gamma": 5.0})
    trainer = GeneratorTrainer(config.generator, 1, 2, seed=0)
    t = torch.tensor([0, 10, 50, 99])
    snr = compute_snr(trainer.noise_scheduler, t)
    expected = torch.minimum(snr, torch.full_like(snr, 5.0)) / (snr if prediction == "epsilon" else snr + 1)
    torch.testing.assert_close(trainer.loss_weights(t), expected)
    off = GeneratorTrainer(tiny_config(tmp_path, {"snr_gamma": 0.0}).generator, 1, 2, seed=0)
    assert torch.equal(off.loss_weights(t), torch.ones(4))


def test_ema_reaches_the_configured_decay_and_matches_diffusers() -> None:
    config = GeneratorConfig(ema_decay=0.99, ema_power=1.0)
    ema = EMAModel([torch.nn.Parameter(torch.zeros(1))], decay=0.99, use_ema_warmup=True, inv_gamma=1.0, power=1.0)
    for step in (1, 2, 50, 99, 100, 101, 500):
        assert config.ema_decay_at(step) == pytest.approx(ema.get_decay(step), abs=1e-12)
    assert config.ema_decay_at(100) == pytest.approx(0.99)  # reached at 1 / (1 - decay) steps
    legacy = GeneratorConfig(ema_decay=0.995, ema_power=2 / 3)
    assert legacy.ema_decay_at(500) < 0.985  # why the old setting did not do what it said in 500 steps


def test_settings_at_their_legacy_value_keep_old_cache_keys(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, {**GENERATOR_LEGACY_VALUES})
    key = generator_key(config, "split", ["a", "b"])
    changed = tiny_config(tmp_path, {**GENERATOR_LEGACY_VALUES, "snr_gamma": 5.0})
    assert generator_key(changed, "split", ["a", "b"]) != key
    from pipeline.config import hash_payload
    old_style = {k: v for k, v in config.generator.to_dict().items()
                 if k not in ("checkpoint_every", "keep_checkpoints") and k not in GENERATOR_LEGACY_VALUES}
    assert key == hash_payload({"split_hash": "split", "generator": old_style, "mode": config.data.mode,
                                "class_names": ["a", "b"], "seed": config.seed})


def test_a_checkpoint_from_before_the_new_settings_resumes_only_with_their_legacy_values(tmp_path: Path) -> None:
    data = toy_training_data()
    legacy = tiny_config(tmp_path, {"train_steps": 2, "checkpoint_every": 2, **GENERATOR_LEGACY_VALUES})
    train_generator(legacy, data, tmp_path / "run", "split", progress=False)
    path = list_checkpoints(tmp_path / "run" / "checkpoints")[-1][1]
    state = torch.load(path, weights_only=True)
    for key in GENERATOR_LEGACY_VALUES:  # what a checkpoint written before these settings existed holds
        del state["generator_config"][key]
    torch.save(state, path)
    longer = tiny_config(tmp_path, {"train_steps": 3, "checkpoint_every": 2, **GENERATOR_LEGACY_VALUES})
    assert train_generator(longer, data, tmp_path / "run", "split", progress=False).resumed_from == 2
    with pytest.raises(ConfigError, match="snr_gamma"):
        train_generator(tiny_config(tmp_path, {"train_steps": 4, "snr_gamma": 5.0, "ema_power": 2 / 3}), data,
                        tmp_path / "run", "split", progress=False)


def test_a_longer_run_continues_the_finished_shorter_one(tmp_path: Path) -> None:
    data_dir = write_toy_folder(tmp_path / "toy", per_class=12)
    data = {"min_side": 16, "class_names": ["top", "bottom"]}
    short = tiny_config(tmp_path, {"train_steps": 3, "checkpoint_every": 3}, data=data,
                        split={"train_fraction": 0.5, "cv_folds": 2})
    split = split_stage(short, ingest_stage(short, data_dir, progress=False).manifest_path)
    first = train_generator_stage(short, split.split_path, progress=False)
    longer = tiny_config(tmp_path, {"train_steps": 5, "checkpoint_every": 3}, data=data,
                         split={"train_fraction": 0.5, "cv_folds": 2})
    second = train_generator_stage(longer, split.split_path, progress=False)
    assert second.key != first.key and second.summary["continued_from"] == 3
    assert second.summary["resumed_from"] == 3 and second.summary["lineage"] == first.summary["lineage"]
    assert json.loads((first.directory / "summary.json").read_text())["steps"] == 3  # the short run is untouched
