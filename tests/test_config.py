from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import (DomainConfig, GeneratorConfig, available_domains, from_dict, load_domain_config,
                             parse_override)
from pipeline.errors import ConfigError

STUDY_TABLE1 = {  # MISSION.md, Table 1: classes and generated images per class
    "brain-mri": (["glioma", "meningioma", "notumor", "pituitary"], 1700, "L"),
    "covid-ct": (["COVID", "non-COVID"], 1500, "L"),
    "all-leukemia": (["Benign", "Early", "Pre", "Pro"], 1000, "RGB"),
}


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
@pytest.mark.parametrize("domain", ["demo", "demo-rgb", "brain-mri", "covid-ct", "all-leukemia"])
def test_every_shipped_domain_loads_under_every_profile(domain: str, profile: str) -> None:
    config = load_domain_config(domain, profile)
    assert config.name == domain and config.profile == profile
    assert config.channels == (3 if config.data.mode == "RGB" else 1)


@pytest.mark.parametrize("domain", sorted(STUDY_TABLE1))
def test_gpu_profile_carries_the_studys_classes_and_counts(domain: str) -> None:
    classes, per_class, mode = STUDY_TABLE1[domain]
    config = load_domain_config(domain, "gpu")
    assert config.data.class_names == classes
    assert config.synthesis.per_class == per_class
    assert config.data.mode == mode
    assert config.classifiers.folds == 5 and config.classifiers.max_epochs == 50
    assert len(config.classifiers.architectures) == 8


def test_cpu_profile_is_smaller_than_gpu() -> None:
    cpu, gpu = load_domain_config("brain-mri", "cpu"), load_domain_config("brain-mri", "gpu")
    assert cpu.generator.image_size < gpu.generator.image_size
    assert cpu.synthesis.per_class < gpu.synthesis.per_class


def test_available_domains_lists_the_packaged_configs() -> None:
    assert {"demo", "brain-mri", "covid-ct", "all-leukemia"} <= set(available_domains())


def test_unknown_key_is_an_error_naming_key_and_allowed_keys(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("data:\n  mode: L\n  class_name: [a, b]\n")
    with pytest.raises(ConfigError, match=r"data\.class_name.*allowed keys.*class_names"):
        load_domain_config(path)


def test_bad_literal_lists_allowed_values() -> None:
    with pytest.raises(ConfigError, match=r"data\.mode = 'CMYK' is not allowed; allowed values: 'L', 'RGB'"):
        load_domain_config("demo", overrides={"data": {"mode": "CMYK"}})


@pytest.mark.parametrize("override, pattern", [
    ({"generator": {"train_steps": -5}}, r"generator\.train_steps = -5 is invalid"),
    ({"generator": {"train_steps": "many"}}, r"generator\.train_steps must be an integer"),
    ({"synthesis": {"guidance_scale": -1.0}}, r"synthesis\.guidance_scale = -1\.0 is invalid"),
    ({"synthesis": {"sampler": "euler"}}, r"synthesis\.sampler = 'euler' is not allowed"),
    ({"split": {"train_fraction": 1.5}}, r"split\.train_fraction = 1\.5 is invalid"),
    ({"generator": {"augment_flip": "yes"}}, r"generator\.augment_flip must be true or false"),
    ({"classifiers": {"arms": ["synthetic", "imagined"]}}, r"classifiers\.arms\[1\] = 'imagined' is not allowed"),
    ({"data": "somewhere"}, r"data must be a mapping"),
])
def test_bad_values_name_the_key(override: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        load_domain_config("demo", overrides=override)


def test_unknown_domain_and_profile() -> None:
    with pytest.raises(ConfigError, match="unknown domain 'brain-ct'; available domains: .*brain-mri"):
        load_domain_config("brain-ct")
    with pytest.raises(ConfigError, match="unknown profile 'tpu'; allowed values: cpu, gpu"):
        load_domain_config("demo", "tpu")


def test_layering_order_domain_profile_overrides_win() -> None:
    config = load_domain_config("demo", "cpu", overrides={"generator": {"train_steps": 7}})
    assert config.generator.train_steps == 7
    assert config.generator.image_size == load_domain_config("demo", "cpu").generator.image_size


def test_parse_override_builds_nested_mapping_and_parses_yaml_values() -> None:
    assert parse_override("classifiers.folds=3") == {"classifiers": {"folds": 3}}
    assert parse_override("classifiers.architectures=[resnet18, vgg16]") == {
        "classifiers": {"architectures": ["resnet18", "vgg16"]}}
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("classifiers.folds")


def test_round_trip_through_dict_is_lossless() -> None:
    config = load_domain_config("brain-mri", "gpu")
    assert from_dict(DomainConfig, config.to_dict()) == config


def test_stage_hash_changes_only_with_its_sections() -> None:
    base = load_domain_config("demo")
    other_seed = load_domain_config("demo", overrides={"classifiers": {"folds": 4}})
    assert base.stage_hash("generator") == other_seed.stage_hash("generator")
    assert base.stage_hash("classifiers") != other_seed.stage_hash("classifiers")


def test_attention_levels_must_match_levels() -> None:
    with pytest.raises(ConfigError, match="generator.attention_levels"):
        GeneratorConfig(block_out_channels=[32, 64], attention_levels=[False, False, True])


def test_yaml_booleans_are_accepted_for_true_false_choices() -> None:
    config = load_domain_config("demo", overrides=parse_override("classifiers.pretrained=false"))
    assert config.classifiers.pretrained == "false"
