"""Shared fixtures: small datasets the tests make themselves, and a folder snapshot for 'untouched' checks."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pipeline.demo_data import PhantomSpec, make_demo_dataset

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture(scope="session")
def phantom_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-class grayscale phantom set, 30 images per class at 48 px (made once per session)."""
    return make_demo_dataset(tmp_path_factory.mktemp("phantom") / "data", PhantomSpec(30, 48, "L", 7),
                             progress=False)


@pytest.fixture
def phantom_dir(phantom_master: Path, tmp_path: Path) -> Path:
    """A private copy of the phantom set that a test may add bad files to."""
    return Path(shutil.copytree(phantom_master, tmp_path / "data"))
