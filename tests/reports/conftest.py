"""One small finished phantom run per test session (see report_helpers)."""

from __future__ import annotations

import pytest
from report_helpers import TINY, FinishedRun, make_manifest

from pipeline.config import load_domain_config
from flows.run import run_domain


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> FinishedRun:
    root = tmp_path_factory.mktemp("report-run")
    manifest = make_manifest(root)
    config = load_domain_config("demo", "cpu", {"runs_root": str(root / "runs"), **TINY})
    record = run_domain(config, manifest, progress=False)
    return FinishedRun(config, record, root / "runs")
