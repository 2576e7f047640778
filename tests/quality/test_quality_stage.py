"""The quality stage end to end on phantoms, with an injected reference classifier (no training, no network)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import pipeline.image_tensors as image_tensors
from pipeline.config import load_domain_config
from pipeline.demo_data import DEMO_CLASSES, PhantomSpec, colourise, make_demo_dataset, render_phantom
from pipeline.errors import LeakageError, QualityGateError
from pipeline.image_tensors import square_resize
from pipeline.imageio import read_image, save_png
from pipeline.quality.judge import FixedReference
from pipeline.quality.features import DomainExtractor, InceptionExtractor, ExtractorUnavailable
from pipeline.quality.stage import assert_training_only, build_extractors, quality_stage
from pipeline.stages import ingest_stage, load_split, split_stage
from pipeline.validate import sha256_file

SIZE = 32


class CentroidReference:
    """A stand-in for the reference classifier: nearest class centroid on 8x8 pooled pixels (training side only)."""

    def __init__(self, images: torch.Tensor, labels: np.ndarray, class_names: list[str]) -> None:
        feats = self.features(images)
        self.centroids = np.stack([feats[labels == c].mean(0) for c in class_names])

    def features(self, images: torch.Tensor) -> np.ndarray:
        return F.adaptive_avg_pool2d(images.float() / 255.0, 8).flatten(1).numpy()

    def predict_proba(self, images: torch.Tensor) -> np.ndarray:
        d = ((self.features(images)[:, None, :] - self.centroids[None]) ** 2).sum(-1)
        e = np.exp(-(d - d.min(1, keepdims=True)) * 5)
        return e / e.sum(1, keepdims=True)


def _setup(tmp_path: Path, mode: str, planted: int = 8, fresh_per_class: int = 15):
    data = make_demo_dataset(tmp_path / "data", PhantomSpec(60, 32, mode, 11), progress=False)
    overrides = {"runs_root": str(tmp_path / "runs"), "data": {"mode": mode}, "split": {"train_fraction": 0.4},
                 "generator": {"image_size": SIZE}, "quality": {"kid_subsets": 5, "msssim_pairs": 20,
                                                                "extractors": ["domain"]}}
    config = load_domain_config("demo" if mode == "L" else "demo-rgb", overrides=overrides)
    ingest = ingest_stage(config, data, progress=False)
    split_path = split_stage(config, ingest.manifest_path).split_path
    split = load_split(split_path)
    rows = []
    out = tmp_path / "synthetic"
    rng = np.random.default_rng(99)
    for label in DEMO_CLASSES:  # fresh samples of the same distribution: never seen by anyone
        for i in range(fresh_per_class):
            gray = render_phantom(label, SIZE, rng)
            pixels = np.round((colourise(gray, rng) if mode == "RGB" else gray) * 255).astype(np.uint8)
            rows.append((save_png(pixels, out / label / f"fresh{i:03d}.png"), label, False))
    train = split.train.sort_values("sha256").reset_index(drop=True)
    for i in range(planted):  # copies of generator training images, as a memorising generator would make
        row = train.iloc[i]
        pixels = square_resize(read_image(row["path"], mode).pixels, SIZE)
        rows.append((save_png(pixels, out / row["label"] / f"copy{i:03d}.png"), row["label"], True))
    manifest = pd.DataFrame({"path": [str(p) for p, _, _ in rows], "relpath": [Path(p).name for p, _, _ in rows],
                             "label": [lab for _, lab, _ in rows], "sha256": [sha256_file(p) for p, _, _ in rows],
                             "planted": [c for _, _, c in rows]})
    manifest_path = tmp_path / "synthetic.parquet"
    manifest.to_parquet(manifest_path)
    images = image_tensors.load_image_tensors(train["path"].tolist(), train["sha256"].tolist(), mode, SIZE)
    reference = CentroidReference(images, train["label"].to_numpy(), list(DEMO_CLASSES))
    return config, split, split_path, manifest, manifest_path, reference


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_stage_measures_flags_copies_and_never_reads_the_held_out_side(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       mode: str) -> None:
    config, split, split_path, manifest, manifest_path, reference = _setup(tmp_path, mode)
    read_paths: list[str] = []
    original = image_tensors.read_image
    monkeypatch.setattr(image_tensors, "read_image", lambda p, *a, **k: (read_paths.append(str(p)), original(p, *a, **k))[1])
    out = quality_stage(config, split_path, manifest_path, progress=False, reference=FixedReference(reference),
                        extractors=[DomainExtractor(reference.features)])
    held_out = set(split.test["path"])
    assert read_paths and not held_out & set(read_paths)  # the 80% held out is never decoded
    report = json.loads((out.directory / "quality.json").read_text())
    metrics = pd.read_parquet(out.directory / "metrics.parquet")
    assert set(metrics["metric"]) == {"frechet_distance", "kid", "precision", "recall", "ms_ssim"}
    assert (metrics["class"] == "all").any() and metrics["reference"].notna().all()
    fd = metrics[(metrics.metric == "frechet_distance") & (metrics["class"] == "all")].iloc[0]
    assert fd["label"] == "Fréchet distance, domain features"
    per_image = pd.read_parquet(out.directory / "per_image.parquet")
    planted = manifest["planted"].to_numpy()
    assert per_image["memorised"].to_numpy()[planted].all()  # every planted copy is flagged
    assert per_image["memorised"].to_numpy()[~planted].mean() <= 0.1  # fresh samples are (almost) never
    assert report["memorisation"]["closest_pairs"][0]["memorised"]
    assert (out.directory / report["memorisation"]["closest_pairs"][0]["image"]).is_file()
    consistency = report["label_consistency"]
    assert sum(map(sum, consistency["confusion"])) == len(manifest) and 0.0 <= consistency["cas"] <= 1.0
    assert per_image["agrees"].mean() == pytest.approx(consistency["overall_agreement"])
    assert out.manifest_path == manifest_path  # nothing dropped unless asked
    again = quality_stage(config, split_path, manifest_path, progress=False, reference=FixedReference(reference),
                          extractors=[DomainExtractor(reference.features)])
    assert again.cached and again.key == out.key


def test_filters_and_gate(tmp_path: Path) -> None:
    config, split, split_path, manifest, manifest_path, reference = _setup(tmp_path, "L")
    extractors = [DomainExtractor(reference.features)]
    config.quality.drop_memorised = True
    out = quality_stage(config, split_path, manifest_path, progress=False, reference=FixedReference(reference),
                        extractors=extractors)
    kept = pd.read_parquet(out.manifest_path)
    assert out.manifest_path != manifest_path
    assert not set(kept["sha256"]) & set(manifest.loc[manifest["planted"], "sha256"])
    assert out.gate["filter"]["dropped_memorised"] >= 8 and out.gate["passed"]

    config.quality.gate.max_memorised_fraction = 0.01
    warned = quality_stage(config, split_path, manifest_path, progress=False, reference=FixedReference(reference),
                           extractors=extractors)  # action: warn -> a message, no stop
    assert warned.cached and not warned.gate["passed"] and "memorised fraction" in warned.gate["messages"][0]
    config.quality.gate.action = "stop"
    with pytest.raises(QualityGateError, match="memorised fraction"):
        quality_stage(config, split_path, manifest_path, progress=False, reference=FixedReference(reference),
                      extractors=extractors)


def test_content_hash_assertion_rejects_a_held_out_image(tmp_path: Path) -> None:
    config, split, *_ = _setup(tmp_path, "L", planted=0, fresh_per_class=1)
    assert_training_only(split.train["sha256"].tolist(), split)
    with pytest.raises(LeakageError):
        assert_training_only([split.test["sha256"].iloc[0]], split)


def test_inception_is_skipped_offline_with_a_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_domain_config("demo", overrides={"quality": {"extractors": ["inception", "domain"],
                                                               "inception_weights": str(tmp_path / "missing.pth"),
                                                               "inception_download": False}})
    usable, info = build_extractors(config, reference=None)
    assert usable == []
    assert not info["inception"]["available"] and "Inception-v3 skipped" in info["inception"]["note"]
    assert "missing.pth" in info["inception"]["note"]
    assert not info["domain"]["available"]
    # the download path, offline: a note, never a hang or a crash (no test reaches the network: the
    # download is replaced by the error an unreachable host gives)
    from torchvision.models import Inception_V3_Weights

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(type(Inception_V3_Weights.IMAGENET1K_V1), "get_state_dict", offline)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))
    with pytest.raises(ExtractorUnavailable, match=r"download \(OSError: \[Errno 101\] Network is unreachable\)"):
        InceptionExtractor(str(tmp_path / "missing.pth"), allow_download=True).load()


def test_inception_loads_a_local_weights_file(tmp_path: Path) -> None:
    """The quality.inception_weights path with a local stand-in file (random weights, the real layout)."""
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    weights = tmp_path / "inception_v3_google-0cc3c7bd.pth"
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), weights)
    features = InceptionExtractor(str(weights), allow_download=False)(torch.zeros(2, 1, 32, 32, dtype=torch.uint8))
    assert features.shape == (2, 2048) and np.isfinite(features).all()
