"""The typed config: shipped files load, every layer wins over the one below it, and every class of
invalid value is one ConfigError that names the dotted key and what is allowed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.cli import build_parser
from pipeline.cli_args import config_from_args
from pipeline.config import (CLASSIFIER_ARCHITECTURES, SAMPLERS, DomainConfig, GeneratorConfig, available_budgets,
                             available_domains, from_dict, load_domain_config, parse_override)
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
    assert config.name == domain and config.profile == profile and config.budget is None
    assert config.channels == (3 if config.data.mode == "RGB" else 1)


@pytest.mark.parametrize("budget", ["cpu-quick", "cpu-full", "gpu"])
def test_every_shipped_budget_loads_with_its_profile(budget: str) -> None:
    assert budget in available_budgets()
    config = load_domain_config("brain-mri", budget=budget)
    assert config.budget == budget and config.profile == ("gpu" if budget == "gpu" else "cpu")


@pytest.mark.parametrize("domain", sorted(STUDY_TABLE1))
def test_gpu_profile_carries_the_studys_classes_and_counts(domain: str) -> None:
    classes, per_class, mode = STUDY_TABLE1[domain]
    config = load_domain_config(domain, "gpu")
    assert config.data.class_names == classes
    assert config.synthesis.per_class == per_class
    assert config.data.mode == mode
    assert config.split.cv_folds == 5 and config.classifiers.max_epochs == 50
    assert config.classifiers.architectures == list(CLASSIFIER_ARCHITECTURES)


def test_cpu_profile_is_smaller_than_gpu() -> None:
    cpu, gpu = load_domain_config("brain-mri", "cpu"), load_domain_config("brain-mri", "gpu")
    assert cpu.generator.image_size < gpu.generator.image_size
    assert cpu.synthesis.per_class < gpu.synthesis.per_class
    assert cpu.split.cv_folds == 3 < gpu.split.cv_folds


def test_available_domains_lists_the_packaged_configs() -> None:
    assert {"demo", "brain-mri", "covid-ct", "all-leukemia"} <= set(available_domains())


# ----------------------------------------------------------------------------------------------
# Layering: defaults < profile < domain < domain.profiles.<p> < budget < --set


LAYERED_DOMAIN = """
data: {mode: L, class_names: [a, b]}
generator:
  ema_decay: 0.98        # domain beats the cpu profile's 0.995
  train_steps: 300       # ... and is beaten by domain.profiles.cpu
synthesis:
  per_class: 10
  steps: 5
profiles:
  cpu:
    generator: {train_steps: 301}
    synthesis: {per_class: 11, steps: 6}
  gpu:
    generator: {train_steps: 999}
"""
LAYERED_BUDGET = """
profile: cpu
overrides:
  synthesis: {per_class: 12, steps: 7}
"""


@pytest.fixture
def layered(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "layered.yaml").write_text(LAYERED_DOMAIN)
    (tmp_path / "tight.yaml").write_text(LAYERED_BUDGET)
    return tmp_path / "layered.yaml", tmp_path / "tight.yaml"


def test_each_layer_beats_the_one_below(layered: tuple[Path, Path]) -> None:
    domain, budget = layered
    config = load_domain_config(domain, overrides=parse_override("synthesis.steps=8"), budget=budget)
    defaults = GeneratorConfig()
    assert config.generator.grad_clip == defaults.grad_clip == 1.0  # set nowhere: the default
    assert defaults.learning_rate == 2e-4 and config.generator.learning_rate == 5e-4  # profile > default
    assert config.generator.ema_decay == 0.98  # domain > profile (0.995)
    assert config.generator.train_steps == 301  # domain.profiles.cpu > domain (300); gpu's 999 not used
    assert config.synthesis.per_class == 12  # budget > domain.profiles.cpu (11) > domain (10) > profile (100)
    assert config.synthesis.steps == 8  # --set > budget (7) > domain.profiles.cpu (6) > domain (5) > profile
    assert config.name == "layered" and config.budget == "tight" and config.profile == "cpu"


def test_the_cli_applies_the_same_layers(layered: tuple[Path, Path]) -> None:
    domain, budget = layered
    args = build_parser().parse_args(["split", "--domain", str(domain), "--budget", str(budget),
                                      "--set", "synthesis.steps=8", "--seed", "4"])
    assert config_from_args(args) == load_domain_config(
        domain, overrides={"synthesis": {"steps": 8}, "seed": 4}, budget=budget)


def test_domain_profiles_section_follows_the_profile(layered: tuple[Path, Path]) -> None:
    domain, _ = layered
    assert load_domain_config(domain, "gpu").generator.train_steps == 999
    assert load_domain_config(domain, "cpu").generator.train_steps == 301


def test_budget_and_profile_must_agree(layered: tuple[Path, Path]) -> None:
    _, budget = layered
    with pytest.raises(ConfigError, match="made for profile 'cpu', not 'gpu'"):
        load_domain_config("demo", "gpu", budget=budget)
    with pytest.raises(ConfigError, match="unknown budget 'tiny'; available budgets: cpu-full, cpu-medium, cpu-quick, gpu"):
        load_domain_config("demo", budget="tiny")


# ----------------------------------------------------------------------------------------------
# Invalid values: one ConfigError naming the dotted key and what is allowed


@pytest.mark.parametrize("override, message", [
    # unknown keys, top level and nested, with the allowed keys at that level
    ({"sead": 3}, "unknown key sead; allowed keys: name, profile, budget, seed,"),
    ({"data": {"class_name": ["a"]}}, "unknown key data.class_name; allowed keys under data: path, mode, class_names"),
    ({"classifiers": {"folds": 3}}, "unknown key classifiers.folds; allowed keys under classifiers: architectures"),
    # wrong types: no strings for numbers or booleans, mappings must be mappings
    ({"generator": {"train_steps": "many"}}, "generator.train_steps must be an integer, got 'many'"),
    ({"generator": {"train_steps": 5.5}}, "generator.train_steps must be an integer, got 5.5"),
    ({"synthesis": {"guidance_scale": "2"}}, "synthesis.guidance_scale must be a number, got '2'"),
    ({"generator": {"augment_flip": "true"}}, "generator.augment_flip must be true or false, got 'true'"),
    ({"generator": {"attention_levels": [False, "no", True]}},
     "generator.attention_levels[1] must be true or false, got 'no'"),
    ({"classifiers": {"pretrained": "false"}}, "classifiers.pretrained = 'false' is not allowed; allowed values: "
                                               "true, false, 'auto'"),
    ({"classifiers": {"checkpoints": ["resnet18=/w.pth"]}}, "classifiers.checkpoints must be a mapping"),
    ({"data": "somewhere"}, "data must be a mapping, got 'somewhere'"),
    ({"data": {"class_names": "a,b"}}, "data.class_names must be a list, got 'a,b'"),
    # out of range, with the range
    ({"generator": {"train_steps": -5}}, "generator.train_steps = -5 is invalid; expected an integer >= 1"),
    ({"split": {"train_fraction": 1.5}}, "split.train_fraction = 1.5 is invalid; expected a number strictly "
                                         "between 0.0 and 1.0"),
    ({"split": {"cv_folds": 1}}, "split.cv_folds = 1 is invalid; expected an integer >= 2"),
    ({"generator": {"class_dropout": 1.0}}, "generator.class_dropout = 1.0 is invalid; expected a number in [0, 1)"),
    ({"generator": {"image_size": 36}}, "generator.image_size = 36 is invalid; expected a multiple of 8, at least 16"),
    ({"generator": {"image_size": 40, "block_out_channels": [32] * 5, "attention_levels": [False] * 5}},
     "generator.image_size = 40 is invalid; expected divisible by 2**(levels-1) = 16"),
    ({"generator": {"attention_levels": [True]}}, "generator.attention_levels = [True] is invalid; expected a list "
                                                  "of 3 booleans"),
    ({"classifiers": {"time_budget_s": 0}}, "classifiers.time_budget_s = 0 is invalid; expected a number > 0 or null"),
    ({"classifiers": {"augment": {"contrast_gamma": [1.2, 0.8]}}},
     "classifiers.augment.contrast_gamma = [1.2, 0.8] is invalid; expected [min, max]"),
    ({"classifiers": {"min_steps": 500, "max_steps": 100}},
     "classifiers.min_steps = 500 is invalid; expected an integer in [0, max_steps = 100]"),
    ({"classifiers": {"arms": ["real", "real"]}}, "classifiers.arms = ['real', 'real'] is invalid; expected a "
                                                  "non-empty list without repeated names"),
    # names outside a vocabulary: architectures, samplers, precision, arms
    ({"classifiers": {"architectures": ["resnet18", "vgg11"]}},
     "classifiers.architectures[1] = 'vgg11' is not allowed; allowed values: 'resnet18', 'resnet50',"),
    ({"classifiers": {"checkpoints": {"vgg11": "/w.pth"}}},
     "classifiers.checkpoints: key 'vgg11' is not allowed; allowed keys: 'resnet18',"),
    ({"synthesis": {"sampler": "euler"}},
     "synthesis.sampler = 'euler' is not allowed; allowed values: " + ", ".join(repr(s) for s in SAMPLERS)),
    ({"generator": {"mixed_precision": "fp8"}},
     "generator.mixed_precision = 'fp8' is not allowed; allowed values: 'auto', 'no', 'bf16', 'fp16'"),
    ({"classifiers": {"mixed_precision": "fp8"}},
     "classifiers.mixed_precision = 'fp8' is not allowed; allowed values: 'auto', 'no', 'bf16', 'fp16'"),
    ({"data": {"mode": "CMYK"}}, "data.mode = 'CMYK' is not allowed; allowed values: 'L', 'RGB'"),
])
def test_invalid_values_name_the_dotted_key(override: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_domain_config("demo", overrides=override)
    text = str(info.value)
    assert message in text and "\n" not in text
    assert text.startswith(str(Path("flows") / "configs" / "domains" / "demo.yaml")) or "demo.yaml:" in text


def test_several_problems_are_reported_together_on_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_domain_config("demo", overrides={"seed": "x", "synthesis": {"steps": 0}})
    assert "seed must be an integer" in str(info.value) and "synthesis.steps = 0 is invalid" in str(info.value)


def test_a_bad_value_in_a_yaml_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("data:\n  mode: L\n  class_name: [a, b]\n")
    with pytest.raises(ConfigError, match=rf"{path}: unknown key data\.class_name; allowed keys under data"):
        load_domain_config(path)


def test_unknown_domain_and_profile() -> None:
    with pytest.raises(ConfigError, match="unknown domain 'brain-ct'; available domains: .*brain-mri"):
        load_domain_config("brain-ct")
    with pytest.raises(ConfigError, match="unknown profile 'tpu'; allowed values: cpu, gpu"):
        load_domain_config("demo", "tpu")


# ----------------------------------------------------------------------------------------------
# Values as YAML, booleans as booleans, the model as data


def test_parse_override_builds_nested_mapping_and_parses_yaml_values() -> None:
    assert parse_override("split.cv_folds=3") == {"split": {"cv_folds": 3}}
    assert parse_override("classifiers.architectures=[resnet18, vgg16]") == {
        "classifiers": {"architectures": ["resnet18", "vgg16"]}}
    assert parse_override("classifiers.checkpoints={resnet18: /w/r18.pth}") == {
        "classifiers": {"checkpoints": {"resnet18": "/w/r18.pth"}}}
    assert parse_override("generator.learning_rate=1e-4") == {"generator": {"learning_rate": 1e-4}}  # a float
    assert parse_override("generator.mixed_precision=no") == {"generator": {"mixed_precision": "no"}}  # not False
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("split.cv_folds")


def test_yaml_booleans_are_booleans_and_checkpoints_a_mapping() -> None:
    config = load_domain_config("demo", overrides={**parse_override("classifiers.pretrained=false"),
                                                   "generator": {"mixed_precision": "no"}})
    assert config.classifiers.pretrained is False
    config = load_domain_config("demo", overrides=parse_override("classifiers.checkpoints={resnet18: /w.pth}"))
    assert config.classifiers.checkpoints == {"resnet18": "/w.pth"} and config.classifiers.pretrained == "auto"


def test_round_trip_through_dict_is_lossless() -> None:
    config = load_domain_config("brain-mri", budget="cpu-quick")
    assert from_dict(DomainConfig, config.to_dict()) == config
    assert from_dict(DomainConfig, json.loads(json.dumps(config.to_dict()))) == config


def test_stage_hash_changes_only_with_its_sections() -> None:
    base = load_domain_config("demo")
    other = load_domain_config("demo", overrides={"classifiers": {"patience": 9}})
    assert base.stage_hash("generator") == other.stage_hash("generator")
    assert base.stage_hash("classifiers") != other.stage_hash("classifiers")


def test_json_schema_carries_types_ranges_and_vocabularies() -> None:
    schema = DomainConfig.model_json_schema()
    defs = schema["$defs"]
    assert schema["required"] == ["name"] and schema["additionalProperties"] is False
    assert defs["SynthesisConfig"]["properties"]["sampler"]["enum"] == list(SAMPLERS)
    assert defs["GeneratorConfig"]["properties"]["train_steps"]["minimum"] == 1
    assert defs["SplitConfig"]["properties"]["cv_folds"]["minimum"] == 2
    assert defs["GeneratorConfig"]["properties"]["grad_clip"]["description"] == "max global gradient norm; 0 = no clipping"
    assert defs["SplitConfig"]["properties"]["cv_folds"]["description"].startswith("The one knob for k")
    assert defs["DataConfig"]["description"] == "Where the real images are and how to read them."
    pretrained = defs["ClassifierConfig"]["properties"]["pretrained"]["anyOf"]
    assert {"type": "boolean"} in pretrained and {"const": "auto", "type": "string"} in pretrained


def test_prefect_shows_the_schema_for_a_flow_parameter() -> None:
    callables = pytest.importorskip("prefect.utilities.callables")  # prefect arrives with the flows
    parameter_schema = callables.parameter_schema

    def flow_function(config: DomainConfig) -> None:
        """A flow's signature, as Prefect reads it."""

    schema = parameter_schema(flow_function).model_dump()
    assert schema["properties"]["config"]["$ref"].endswith("DomainConfig")
    assert "SynthesisConfig" in schema["definitions"]
