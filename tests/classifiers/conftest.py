"""Session fixtures for the classifier tests (phantom split and synthetic set, made once)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clf_helpers import demo_config, make_split, make_synthetic_manifest
from pipeline.config import DomainConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network here: hub lookups must fail fast


@pytest.fixture(scope="session")
def demo_split(tmp_path_factory: pytest.TempPathFactory) -> tuple[DomainConfig, Path]:
    tmp = tmp_path_factory.mktemp("demo-split")
    config = demo_config(tmp)
    return config, make_split(config, per_class=50)


@pytest.fixture(scope="session")
def synthetic_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_manifest(tmp_path_factory.mktemp("synthetic"), per_class=20)
