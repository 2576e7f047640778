"""The fit key: a setting that changes a fit changes its key; a new option at its neutral value does not."""

from __future__ import annotations

from dataclasses import replace

from classifiers.train import FitSpec
from pipeline.config import ClassifierConfig


def spec(**config_changes: object) -> FitSpec:
    config = ClassifierConfig().to_dict() | config_changes
    return FitSpec(domain="d", arm="real", architecture="resnet18", fold=0, arm_manifest_path="a", arm_hash="h",
                   real_manifest_path="r", real_hash="rh",
                   class_names=("a", "b"), mode="L", seed=0, config=config, folds=3, fold_hash="f",
                   weights="scratch", augment=False,
                   runs_root="runs", cache_dir="cache")


def test_options_at_their_neutral_default_keep_fits_cached_before_them_valid() -> None:
    shipped = spec()
    before_the_options = replace(shipped, config={k: v for k, v in shipped.config.items()
                                                  if k not in ("select_on", "label_smoothing")})
    assert shipped.key == before_the_options.key


def test_settings_that_change_the_fit_change_the_key() -> None:
    base = spec().key
    changed = [spec(select_on="val_accuracy").key, spec(label_smoothing=0.1).key, spec(learning_rate=3e-4).key]
    assert len({base, *changed}) == 4
    assert replace(spec(), seed=1).key != base and replace(spec(), fold=1).key != base
