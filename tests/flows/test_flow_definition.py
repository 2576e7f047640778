"""The flow's definition without running it: one stage list for both front doors, task options,
parameter resolution and artifact keys."""

from __future__ import annotations

import pytest

from flows.synth_augment import artifact_slug, fit_task, resolve_config, stage_task, synth_augment
from pipeline.config import load_domain_config
from pipeline.errors import ConfigError
from flows.run import ALL_STAGES, STAGES


def test_every_stage_of_run_domain_is_a_task_of_the_flow_with_its_tags_and_retries() -> None:
    config = load_domain_config("demo")
    for stage in STAGES:
        task = stage_task(stage, config)
        assert task.name == stage.name
        assert task.retries == stage.retries
        assert set(task.tags) == set(stage.tags)
        assert task.persist_result is (stage.cache_key is not None)
    by_name = {stage.name: stage for stage in STAGES}
    assert by_name["generator"].retries == 0 and "gpu" in by_name["generator"].tags  # never a blind retrain
    assert by_name["synthesis"].retries > 0  # idempotent: fills in missing images
    assert fit_task.retries == 0 and "gpu" in fit_task.tags
    schema = synth_augment.parameters.model_dump()["properties"]
    assert schema["until"]["enum"] == list(ALL_STAGES)
    assert schema["profile"]["anyOf"][0]["enum"] == ["cpu", "gpu"]


def test_budget_profile_and_overrides_layer_in_that_order(tmp_path) -> None:
    config = resolve_config("demo", budget="smoke", overrides={"split": {"cv_folds": 3}}, runs_root=str(tmp_path))
    assert config.generator.train_steps == 6 and config.split.cv_folds == 3
    assert config.runs_root == str(tmp_path) and config.profile == "cpu"
    with pytest.raises(ConfigError, match="made for profile 'cpu'"):
        resolve_config("demo", profile="gpu", budget="smoke")
    with pytest.raises(ConfigError, match="unknown budget 'nightly'.*smoke"):
        resolve_config("demo", budget="nightly")
    with pytest.raises(ConfigError, match="split.cv_folds"):
        resolve_config("demo", overrides={"split": {"cv_folds": 1}})


@pytest.mark.parametrize(("name", "slug"), [("brain-mri", "brain-mri"), ("My_Domain.v2", "my-domain-v2"),
                                            ("--", "domain")])
def test_artifact_keys_are_lowercase_with_dashes(name: str, slug: str) -> None:
    assert artifact_slug(name) == slug
