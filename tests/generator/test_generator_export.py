"""The trained generator is a diffusers pipeline a user loads with nothing but diffusers and our class.

A tiny generator goes through the real stages (ingest, split, train_generator_stage,
synthesis_stage). A fresh Python process then imports diffusers and ClassConditionalPipeline
only, loads the exported folder with ``from_pretrained``, asks for images of one class by name
with the manifest's seeds, and must get the synthetic set's pixels exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from gen_helpers import tiny_config, write_toy_folder
from pipeline.generator.checkpoint import folder_sha256
from pipeline.generator.stage import synthesis_stage, train_generator_stage
from pipeline.stages import ingest_stage, load_split, split_stage

REPO = Path(__file__).resolve().parents[2]

USER_SCRIPT = """
import json, sys
import numpy as np, torch
import diffusers
from pipeline.generator.pipeline import ClassConditionalPipeline

path, label, seeds, out = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
pipe = ClassConditionalPipeline.from_pretrained(path)
images = pipe(class_labels=[label] * len(seeds), generator=[torch.Generator().manual_seed(s) for s in seeds]).images
np.save(out, np.stack([np.asarray(image) for image in images]))
print(json.dumps({"project_modules": sorted(m for m in sys.modules if m.split(".")[0] in ("pipeline", "classifiers")),
                  "mode": images[0].mode, "size": images[0].size, "scheduler": type(pipe.scheduler).__name__,
                  "class_names": list(pipe.config.class_names)}))
"""

# A machine without synth-augment: the project's packages cannot be imported (an editable install of this
# checkout would otherwise provide them), only torch and diffusers; the folder's own pipeline.py is loaded.
PLAIN_DIFFUSERS_SCRIPT = """
import importlib.abc, json, sys

class NoProject(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pipeline", "classifiers", "reports", "flows"):
            raise ImportError(f"{name}: synth-augment is not installed on this machine")
        return None

sys.meta_path.insert(0, NoProject())
import numpy as np, torch
from diffusers import DiffusionPipeline

path, label, seeds, out = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
pipe = DiffusionPipeline.from_pretrained(path, custom_pipeline="pipeline", trust_remote_code=True)
images = pipe(class_labels=[label] * len(seeds), generator=[torch.Generator().manual_seed(s) for s in seeds]).images
np.save(out, np.stack([np.asarray(image) for image in images]))
print(json.dumps({"class": type(pipe).__name__, "module": type(pipe).__module__,
                  "project_modules": sorted(m for m in sys.modules if m.split(".")[0] in ("pipeline", "classifiers"))}))
"""


def test_exported_pipeline_reproduces_synthesis_in_a_fresh_process(tmp_path: Path,
                                                                   capfd: pytest.CaptureFixture[str]) -> None:
    config = tiny_config(
        tmp_path, {"train_steps": 6, "checkpoint_every": 6},
        data={"class_names": ["top", "bottom"], "min_side": 32}, split={"train_fraction": 0.5, "cv_folds": 2},
        synthesis={"per_class": 3, "sampler": "sde-dpmsolver++", "steps": 4, "guidance_scale": 2.0, "batch_size": 3})
    ingest = ingest_stage(config, write_toy_folder(tmp_path / "toy", per_class=8), progress=False)
    split = split_stage(config, ingest.manifest_path)
    generator = train_generator_stage(config, split.split_path, progress=False)
    path = generator.pipeline_path
    assert generator.summary["pipeline_path"] == str(path) and path.parent == generator.directory
    assert generator.pipeline_hash == folder_sha256(path)

    # what the folder holds: safetensors weights, the full scheduler config, class names and data identity
    assert (path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    index = json.loads((path / "model_index.json").read_text())
    assert index["_class_name"] == "ClassConditionalPipeline" and index["class_names"] == ["top", "bottom"]
    assert index["mode"] == "L" and index["scheduler"] == ["diffusers", "DPMSolverMultistepScheduler"]
    assert index["training_data"]["manifest_hash"] == generator.summary["manifest_hash"]
    assert index["training_data"]["training_hash"] == generator.summary["training_hash"] == load_split(split.split_path).training_hash
    scheduler = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
    # the full scheduler config of the configured sampler: v-prediction, so x0_clip auto = no clipping
    assert scheduler["algorithm_type"] == "sde-dpmsolver++" and scheduler["thresholding"] is False
    assert scheduler["timestep_spacing"] == "trailing" and scheduler["prediction_type"] == "v_prediction"
    assert scheduler["beta_schedule"] == config.generator.beta_schedule
    assert scheduler["lambda_min_clipped"] == pytest.approx(-5.1)

    synthesis = synthesis_stage(config, generator, progress=False)
    assert synthesis.summary["generator_hash"] == generator.pipeline_hash
    rows = pd.read_parquet(synthesis.manifest_path).query("label == 'bottom'").sort_values("index")
    out = tmp_path / "user.npy"
    done = subprocess.run([sys.executable, "-c", USER_SCRIPT, str(path), "bottom", json.dumps(rows["seed"].tolist()),
                           str(out)], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["project_modules"] == ["pipeline", "pipeline.generator", "pipeline.generator.pipeline"]
    assert report["mode"] == "L" and report["size"] == [16, 16] and report["class_names"] == ["top", "bottom"]
    assert report["scheduler"] == "DPMSolverMultistepScheduler"
    synthetic = np.stack([np.asarray(Image.open(p)) for p in rows["path"]])
    np.testing.assert_array_equal(np.load(out), synthetic)  # the very pixels of the synthetic set

    # and with plain diffusers on a machine without this project (b64a618: "module diffusers has no
    # attribute ClassConditionalPipeline"): the folder carries its pipeline's source and a card saying how
    plain = tmp_path / "plain.npy"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", PLAIN_DIFFUSERS_SCRIPT, str(path), "bottom",
                           json.dumps(rows["seed"].tolist()), str(plain)], cwd=tmp_path,
                          env={**env, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "hf-modules")},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["class"] == "ClassConditionalPipeline" and report["project_modules"] == [], report
    np.testing.assert_array_equal(np.load(plain), synthetic)
    assert 'custom_pipeline="pipeline"' in (path / "README.md").read_text()

    # the export is what the cache trusts: a changed file is named and re-exported, never silently reused
    original = (path / "model_index.json").read_bytes()
    (path / "model_index.json").write_text(original.decode().replace('"L"', '"RGB"'))
    again = train_generator_stage(config, split.split_path, progress=False)
    assert not again.cached and (path / "model_index.json").read_bytes() == original
    assert again.pipeline_hash == generator.pipeline_hash  # re-exported from the last checkpoint, same weights
    assert "model_index.json is changed since the stage finished" in capfd.readouterr().err
