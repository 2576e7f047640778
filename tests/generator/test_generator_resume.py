"""Kill-and-resume: an interrupted run continues the same schedule from its newest readable checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import UNet2DModel

from gen_helpers import tiny_config, toy_training_data
from pipeline.errors import ConfigError
from pipeline.generator.checkpoint import list_checkpoints, load_latest_checkpoint
from pipeline.generator.train import train_generator


class Killed(Exception):
    """Stands in for a kill signal arriving after a given step."""


def _kill_after(step_to_die: int, seen: list[tuple[int, float]]):
    def on_step(step: int, loss: float) -> None:
        seen.append((step, loss))
        if step == step_to_die:
            raise Killed(step)
    return on_step


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return UNet2DModel.from_pretrained(path / "unet").state_dict()  # the exported pipeline's EMA weights


def test_kill_resume_continues_the_same_run_and_skips_a_corrupt_checkpoint(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, {"train_steps": 8, "checkpoint_every": 2, "keep_checkpoints": 2})
    data = toy_training_data()

    reference = train_generator(config, data, tmp_path / "ref", "split", progress=False)
    ref_losses = dict(reference.losses)
    assert sorted(ref_losses) == list(range(1, 9))

    run_dir = tmp_path / "run"
    seen: list[tuple[int, float]] = []
    with pytest.raises(Killed):
        train_generator(config, data, run_dir, "split", progress=False, on_step=_kill_after(5, seen))
    assert [s for s, _ in list_checkpoints(run_dir / "checkpoints")] == [2, 4]  # keep-last-2, step 5 unsaved
    state, _ = load_latest_checkpoint(run_dir / "checkpoints")
    assert state["step"] == 4
    assert all(v["step"] == 4 for v in state["optimizer"]["state"].values())  # AdamW's own step counter
    assert state["lr_scheduler"]["last_epoch"] == 4
    assert state["data"]["manifest_hash"] == data.manifest_hash

    resumed = train_generator(config, data, run_dir, "split", progress=False)
    assert resumed.resumed_from == 4
    assert [s for s, _ in resumed.losses] == [5, 6, 7, 8]  # continued, not restarted
    for step, loss in resumed.losses:
        assert loss == pytest.approx(ref_losses[step], rel=1e-4, abs=1e-6)
    for name, tensor in _weights(reference.model_path).items():
        torch.testing.assert_close(_weights(resumed.model_path)[name], tensor, rtol=1e-4, atol=1e-5)

    # A damaged newest checkpoint (truncated on disk) falls back to the previous one, with a warning.
    newest = list_checkpoints(run_dir / "checkpoints")[-1][1]
    assert newest.name == "ckpt-00000008.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 3])
    with pytest.warns(RuntimeWarning, match="ckpt-00000008.pt is unreadable.*falling back"):
        again = train_generator(config, data, run_dir, "split", progress=False)
    assert again.resumed_from == 6
    assert [s for s, _ in again.losses] == [7, 8]
    for step, loss in again.losses:
        assert loss == pytest.approx(ref_losses[step], rel=1e-4, abs=1e-6)


def test_resume_refuses_other_images_or_other_model_settings(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, {"train_steps": 2, "checkpoint_every": 1})
    data = toy_training_data()
    train_generator(config, data, tmp_path / "run", "split", progress=False)

    other = toy_training_data()
    other.manifest_hash = "another-manifest"
    with pytest.raises(ConfigError, match="was trained on other images"):
        train_generator(config, other, tmp_path / "run", "split", progress=False)
    wider = tiny_config(tmp_path, {"train_steps": 4, "block_out_channels": [32, 32]})
    with pytest.raises(ConfigError, match="different generator settings \\(block_out_channels\\)"):
        train_generator(wider, data, tmp_path / "run", "split", progress=False)
    longer = tiny_config(tmp_path, {"train_steps": 4, "checkpoint_every": 1})
    assert train_generator(longer, data, tmp_path / "run", "split", progress=False).resumed_from == 2
