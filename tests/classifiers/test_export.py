"""Each arm's classifier is a timm model folder: it loads in a fresh process through timm.create_model
(no project code) and reproduces the held-out predictions the stage stored for it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from classifiers.data import load_tensors
from classifiers.stage import ENSEMBLE, classifiers_stage
from classifiers.scoring import scores_path
from clf_helpers import demo_config
from pipeline.config import DomainConfig
from pipeline.image_tensors import domain_cache_dir
from pipeline.stages import load_split

REPO = Path(__file__).resolve().parents[2]

USER_SCRIPT = """
import json, sys
import numpy as np, torch, timm

folder, images, out = sys.argv[1:4]
cfg = json.load(open(f"{folder}/config.json"))
# the documented form: the architecture, the exported pretrained_cfg overlaid with the weights file
spelled_out = timm.create_model(cfg["architecture"], pretrained=True, num_classes=cfg["num_classes"],
                                in_chans=cfg["pretrained_cfg"]["input_size"][0],
                                pretrained_cfg_overlay=dict(cfg["pretrained_cfg"], file=f"{folder}/model.safetensors"))
local_dir = timm.create_model(f"local-dir:{folder}", pretrained=True)
x = torch.from_numpy(np.load(images)).float() / 255
probs, configs = [], []
for model in (spelled_out, local_dir):
    data = timm.data.resolve_data_config(model=model.eval())
    mean, std = (torch.tensor(data[k]).view(1, -1, 1, 1) for k in ("mean", "std"))
    with torch.no_grad():
        probs.append(torch.softmax(model((x - mean) / std), dim=1).numpy())
    configs.append({k: list(data[k]) for k in ("input_size", "mean", "std")})
np.save(out, np.stack(probs))
print(json.dumps({"project_modules": sorted(m for m in sys.modules if m.split(".")[0] in ("pipeline", "classifiers")),
                  "label_names": local_dir.pretrained_cfg.get("label_names"), "data": configs}))
"""


def test_each_arm_exports_its_lowest_validation_loss_fit_loadable_with_timm(
        demo_split: tuple[DomainConfig, Path], tmp_path: Path) -> None:
    base, split_path = demo_split
    config = demo_config(tmp_path, architectures=["resnet18"], arms=["real"], image_size=32, folds=2,
                         max_steps=6, min_steps=6, eval_every_steps=3)
    out = classifiers_stage(config, split_path, None, progress=False)
    class_names = config.data.resolve_class_names(load_split(split_path).table["label"])
    table = pd.read_parquet(out.results_path)
    folds = table[(table["arm"] == "real") & (table["fold"] != ENSEMBLE)]
    export = out.summary["exports"]["real"]
    chosen = folds.loc[folds["val_loss"].idxmin()]  # by validation loss, never by held-out numbers
    assert (export["fold"], export["fit_key"]) == (chosen["fold"], chosen["fit_key"])
    folder = Path(export["path"])
    assert folder == out.directory / "export" / "real" and (folder / "model.safetensors").is_file()
    saved = json.loads((folder / "config.json").read_text())
    assert saved["architecture"] == "resnet18" and saved["num_classes"] == 4
    assert saved["label_names"] == class_names
    assert saved["pretrained_cfg"]["input_size"] == [1, 32, 32]
    assert saved["synth_augment"]["selected_by"].startswith("lowest validation loss")

    test = pd.read_parquet(out.directory / "test_manifest.parquet").head(6)
    images, _ = load_tensors(test, class_names, "L", 32,
                             domain_cache_dir(config.runs_root, config.name))
    np.save(tmp_path / "images.npy", images.numpy())
    done = subprocess.run([sys.executable, "-c", USER_SCRIPT, str(folder), str(tmp_path / "images.npy"),
                           str(tmp_path / "probs.npy")], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["project_modules"] == []  # timm alone loads it
    assert report["label_names"] == class_names
    for data in report["data"]:
        assert data["input_size"] == [1, 32, 32] and len(data["mean"]) == len(data["std"]) == 1
    stored = np.load(scores_path(out.directory, "test", chosen["fit_key"]))[:6]  # what the stage scored
    for probs in np.load(tmp_path / "probs.npy"):
        np.testing.assert_allclose(probs, stored, atol=1e-5)
        assert (probs.argmax(1) == stored.argmax(1)).all()


@pytest.mark.parametrize("name", ["alexnet", "googlenet"])
def test_registered_torchvision_models_export_and_reload_like_timm_models(name: str, tmp_path: Path) -> None:
    """AlexNet/GoogLeNet (ours, in timm's registry) go through timm's own export and local-dir loader."""
    import timm
    import torch
    from timm.models import save_for_hf

    from classifiers import zoo

    torch.manual_seed(0)
    model = zoo.create(name, in_chans=1, num_classes=3).eval()
    save_for_hf(model, str(tmp_path / name), safe_serialization=True, data_config={"input_size": (1, 64, 64)})
    loaded = timm.create_model(f"local-dir:{tmp_path / name}", pretrained=True).eval()
    assert len(timm.data.resolve_data_config(model=loaded)["mean"]) == 1
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_select_per_arm_follows_select_on_with_the_loss_breaking_accuracy_ties() -> None:
    from types import SimpleNamespace

    from classifiers.export import select_per_arm

    fits = [SimpleNamespace(key=key, metrics={"arm": "real", "val_loss": loss, "val_accuracy": accuracy})
            for key, loss, accuracy in [("low-loss-chance", 1.2, 0.25), ("accurate", 1.9, 0.70),
                                        ("accurate-confident", 1.5, 0.70), ("nan", float("nan"), float("nan"))]]
    assert select_per_arm(fits)["real"].key == "low-loss-chance"  # type: ignore[arg-type]
    assert select_per_arm(fits, "val_accuracy")["real"].key == "accurate-confident"  # type: ignore[arg-type]
