"""The MONAI augmentation of real+aug: deterministic for a seed, changes the image, stays in range, per domain."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from classifiers.data import BatchMaker
from pipeline.augment import BatchAugment, build_transforms
from pipeline.config import AugmentConfig, ClassifierConfig, load_domain_config
from pipeline.demo_data import PhantomSpec, make_demo_dataset
from pipeline.image_tensors import load_image_tensors


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> torch.Tensor:
    root = make_demo_dataset(tmp_path_factory.mktemp("aug") / "data", PhantomSpec(4, 48, "L", 5), progress=False)
    paths = sorted(str(p) for p in root.rglob("*.png"))
    sha256s = [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths]
    return load_image_tensors(paths, sha256s, "L", 48, progress=False).float() / 255.0


def test_real_aug_is_deterministic_for_a_seed_and_changes_the_image(phantoms: torch.Tensor) -> None:
    augment = BatchAugment(load_domain_config("brain-mri", "cpu").classifiers.augment)
    a = augment(phantoms, torch.Generator().manual_seed(3))
    b = augment(phantoms, torch.Generator().manual_seed(3))
    c = augment(phantoms, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and a.shape == phantoms.shape and a.dtype == phantoms.dtype
    assert (a - phantoms).abs().mean() > 0.02  # every batch is really transformed
    assert (a - c).abs().mean() > 0.02  # and another seed transforms it differently
    assert a.min() >= 0.0 and a.max() <= 1.0  # intensity transforms are clamped to the input range
    assert (a - phantoms).abs().flatten(1).amax(1).gt(0).all()  # no image left untouched (affine p = 1)


def test_intensity_transforms_alone_keep_the_geometry(phantoms: torch.Tensor) -> None:
    config = AugmentConfig(hflip=False, rotation_deg=0, scale=0, translate=0, bias_field=0.3,
                           contrast_gamma=[0.7, 1.4], noise_std=0.0, intensity_prob=1.0)
    out = BatchAugment(config)(phantoms, torch.Generator().manual_seed(0))
    background = phantoms == 0  # black stays black: the bias field multiplies, gamma keeps the minimum
    assert background.float().mean() > 0.1 and out[background].abs().max() < 1e-6
    assert (out - phantoms).abs().mean() > 0.005
    names = [type(t).__name__ for t in build_transforms(config, 48).transforms]
    assert names == ["RandBiasField", "RandAdjustContrast"]


def test_domain_configs_choose_the_transforms() -> None:
    names = {d: [type(t).__name__ for t in build_transforms(load_domain_config(d, "cpu").classifiers.augment,
                                                           64).transforms]
             for d in ("brain-mri", "covid-ct", "all-leukemia")}
    assert names["brain-mri"] == ["RandFlip", "RandAffine", "RandBiasField", "RandAdjustContrast", "RandGaussianNoise"]
    assert "RandBiasField" not in names["covid-ct"]  # CT has no MRI bias field
    assert names["all-leukemia"][:2] == ["RandFlip", "RandFlip"]  # smears have no orientation: both flips
    off = AugmentConfig(hflip=False, rotation_deg=0, scale=0, translate=0, bias_field=0, contrast_gamma=[1, 1],
                        noise_std=0)
    assert build_transforms(off, 64) is None


def test_only_the_augmented_arm_is_augmented(phantoms: torch.Tensor) -> None:
    images = (phantoms * 255).to(torch.uint8)
    plain = BatchMaker([0.5], [0.25], ClassifierConfig(), augment=False)
    augmented = BatchMaker([0.5], [0.25], ClassifierConfig(), augment=True)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(plain(images, g, train=True), plain(images))
    assert not torch.equal(augmented(images, g, train=True), augmented(images))
    assert torch.equal(augmented(images), plain(images))  # evaluation batches are never augmented
