"""The test set is read once, by the final scoring of frozen fits (issue 18).

Two complete runs from the same data, each in its own run store: the second one's held-out side is
tampered with right after the split (labels rotated among the held-out images, a third of them
replaced by other pixels). Everything that chooses or trains - the generator, the synthesis and its
selection, the quality stage, every fit and its step, each arm's chosen architecture, the exported
models, the model LIME explains - must come out byte-identical, and the held-out scores must change.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.config import load_domain_config
from pipeline.demo_data import PhantomSpec, make_demo_dataset
from flows.run import STAGES, start_run
from pipeline.split import TEST, assignment_hash
from pipeline.stages import SplitOutput
from pipeline.store import atomic_write_json, atomic_write_table, read_json

SETTINGS = {
    "generator": {"image_size": 16, "block_out_channels": [32, 64], "attention_levels": [False, False],
                  "train_steps": 6, "batch_size": 8, "warmup_steps": 1, "num_train_timesteps": 100,
                  "checkpoint_every": 3},
    "synthesis": {"per_class": 6, "steps": 4, "batch_size": 24, "select": True,
                  "guidance_candidates": [1.0, 3.0], "select_per_class": 2},
    "split": {"cv_folds": 2},
    "classifiers": {"architectures": ["resnet18", "mobilenetv2_100"], "arms": ["real", "synthetic", "real+aug"],
                    "image_size": 32, "max_steps": 3, "min_steps": 3, "eval_every_steps": 1, "pretrained": False,
                    "batch_size": 16},
    "report": {"num_samples": 20, "real_per_kind": 1, "synthetic_per_class": 1, "n_segments": 8},
}
UPSTREAM = ("generator", "synthesis", "quality")


def tamper(split: SplitOutput, folder: Path) -> SplitOutput:
    """A copy of the split whose held-out labels are rotated and a third of whose held-out images are replaced."""
    table = pd.read_parquet(split.split_path)
    held = np.flatnonzero(table["split"].to_numpy() == TEST)
    table.loc[held, "label"] = np.roll(table.loc[held, "label"].to_numpy(), 1)
    folder.mkdir(parents=True)
    for i in held[::3]:
        pixels = np.asarray(Image.open(table.at[i, "path"]))
        replacement = folder / f"replaced-{i}.png"
        Image.fromarray(np.ascontiguousarray(255 - pixels[::-1])).save(replacement)
        table.at[i, "path"] = str(replacement)
        table.at[i, "sha256"] = hashlib.sha256(replacement.read_bytes()).hexdigest()
    path = folder / "split.parquet"
    atomic_write_table(path, table)
    meta = {**read_json(Path(split.split_path).with_name("split.json")), "split_hash": assignment_hash(table)}
    atomic_write_json(folder / "split.json", meta)
    return SplitOutput("tampered", folder, path, meta["split_hash"], meta)


def run(config: Any, data: Path, tamper_in: Path | None = None) -> dict[str, Any]:
    """The stages of ``run_domain``, with the split optionally tampered with before anything reads it."""
    record = start_run(config)
    done: dict[str, Any] = {"data": data, "run_dir": record.run_dir, "root": str(config.runs_root)}
    for stage in STAGES:
        if stage.when(config):
            done[stage.name] = stage.run(config, done, False)
            if stage.name == "split" and tamper_in is not None:
                done["split"] = tamper(done["split"], tamper_in)
            record.add(stage.name, 0.0, **stage.info(done[stage.name]))
    return done


def _export_bytes(out: Any) -> dict[str, bytes]:
    return {str(p.relative_to(out.directory)): p.read_bytes() for p in sorted((out.directory / "export").rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    root = tmp_path_factory.mktemp("isolation")
    data = make_demo_dataset(root / "data", PhantomSpec(26, 32, "L", 3), progress=False)
    honest = run(load_domain_config("demo", "cpu", {"runs_root": str(root / "a"), **SETTINGS}), data)
    tampered = run(load_domain_config("demo", "cpu", {"runs_root": str(root / "b"), **SETTINGS}), data,
                   tamper_in=root / "b-split")
    return honest, tampered


def test_nothing_that_chooses_or_trains_reads_the_held_out_side(two_runs) -> None:
    honest, tampered = two_runs
    assert honest["split"].split_hash != tampered["split"].split_hash  # the tampering is real
    for name in UPSTREAM:
        assert honest[name].key == tampered[name].key, name
    assert honest["generator"].pipeline_hash == tampered["generator"].pipeline_hash
    # the decision (plan) of each run, with its own store's folder names taken out
    selection = [json.dumps(out["synthesis"].summary.get("selection"), sort_keys=True).replace(out["root"], "<store>")
                 for out in (honest, tampered)]
    assert selection[0] == selection[1] and selection[0] != "null"
    synthetic = [pd.read_parquet(out["synthesis"].manifest_path)["sha256"].tolist() for out in (honest, tampered)]
    assert synthetic[0] == synthetic[1]
    timeless = [{k: v for k, v in out["quality"].summary.items() if k != "seconds"} for out in (honest, tampered)]
    assert timeless[0] == timeless[1]
    pd.testing.assert_frame_equal(*(pd.read_parquet(out["quality"].directory / "metrics.parquet")
                                    for out in (honest, tampered)))


def test_fits_choices_exports_and_the_explained_model_are_identical(two_runs) -> None:
    honest, tampered = two_runs
    results = [pd.read_parquet(out["classifiers"].results_path) for out in (honest, tampered)]
    fold_columns = ["arm", "architecture", "fold", "fit_key", "best_step", "steps_run", "val_loss", "val_accuracy"]
    pd.testing.assert_frame_equal(*(r[fold_columns] for r in results))
    chosen = [{arm: c["architecture"] for arm, c in out["classifiers"].summary["chosen_per_arm"].items()}
              for out in (honest, tampered)]
    assert chosen[0] == chosen[1] and set(chosen[0]) == {"real", "synthetic", "real+aug"}
    assert _export_bytes(honest["classifiers"]) == _export_bytes(tampered["classifiers"])
    models = [{arm: (m["fit_key"], m["architecture"]) for arm, m in out["explain"].summary["models"].items()}
              for out in (honest, tampered)]
    assert models[0] == models[1]


def test_only_the_scores_change(two_runs) -> None:
    honest, tampered = two_runs
    results = [pd.read_parquet(out["classifiers"].results_path) for out in (honest, tampered)]
    assert honest["classifiers"].key != tampered["classifiers"].key  # scoring is keyed by the held-out set
    assert (results[0]["n_test"] == results[1]["n_test"]).all()
    assert not np.allclose(results[0]["test_accuracy"], results[1]["test_accuracy"])
    for out in (honest, tampered):
        fits = Path(out["classifiers"].results_path).parents[2] / "classifier-fits"
        for metrics in fits.glob("*/metrics.json"):
            assert not any(k.startswith(("test_", "f1_", "precision_", "recall_")) for k in read_json(metrics))
