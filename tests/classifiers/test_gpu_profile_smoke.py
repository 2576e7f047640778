"""The gpu profile's classifier shapes build and train on the CPU: every architecture, 224 px, 5 folds, batch 64.

Nobody here can run the gpu profile; this at least proves its settings resolve, every one of the eight
CNNs takes a 224 px batch of 64 through one optimizer step and a validation, and the fit records say so.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from classifiers.stage import plan_fits, read_inputs
from classifiers.train import run_fit
from pipeline.config import CLASSIFIER_ARCHITECTURES, load_domain_config
from pipeline.demo_data import PhantomSpec, make_demo_dataset
from pipeline.stages import ingest_stage, split_stage


@pytest.mark.slow
def test_gpu_profile_classifier_shapes_take_one_step_on_cpu(tmp_path: Path) -> None:
    config = load_domain_config("demo", "gpu", {
        "runs_root": str(tmp_path / "runs"), "split": {"train_fraction": 0.5},
        "classifiers": {"pretrained": False, "arms": ["real"], "max_steps": 1, "min_steps": 1,
                        "eval_every_steps": 1}})
    cc = config.classifiers
    assert (cc.image_size, config.split.cv_folds, cc.batch_size, cc.budget) == (224, 5, 64, "steps")
    assert cc.architectures == list(CLASSIFIER_ARCHITECTURES)
    data = make_demo_dataset(tmp_path / "data", PhantomSpec(40, 64, "L", 1), progress=False)
    split = split_stage(config, ingest_stage(config, data, progress=False).manifest_path)
    inputs = read_inputs(config, split.split_path, None)
    specs, _ = plan_fits(config, inputs, tmp_path / "stage", progress=False)
    for spec in [s for s in specs if s.fold == 0]:
        metrics = run_fit(spec).metrics
        assert metrics["steps_run"] == 1 and metrics["samples_seen"] == 64, spec.architecture
        assert metrics["image_size"] == 224 and 0.0 <= metrics["val_accuracy"] <= 1.0
