"""bench_flow's stage table: the demo's stage times read from the run record, beside the numbers before issue 20."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

bench_flow = pytest.importorskip("benchmarks.bench_flow")


def _run_record(root: Path, stamp: str, seconds: dict[str, float]) -> None:
    run_dir = root / "demo" / "history" / stamp
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"meta": {}, "stages": {k: {"seconds": v} for k, v in seconds.items()}}))


def test_stage_seconds_come_from_the_newest_run(tmp_path: Path) -> None:
    _run_record(tmp_path, "20261201T000000Z", {"generator": 999.0})
    _run_record(tmp_path, "20261207T000000Z", {"generator": 211.54, "reference": 88.8, "split": 0.087})
    assert bench_flow.stage_seconds(tmp_path) == {"generator": 211.5, "reference": 88.8, "split": 0.1}
    with pytest.raises(SystemExit, match="no finished demo run"):
        bench_flow.stage_seconds(tmp_path / "empty")


def test_stage_table_scales_by_the_matmul_rate_and_keeps_before_only_stages() -> None:
    rate = bench_flow.BEFORE["matmul_gflops"] / 2  # a machine half as fast: scaled seconds are half
    lines = bench_flow.stage_table({"plain_stages_s": {"generator": 200.0, "reference": 90.0}, "plain_s": 600.0,
                                    "matmul_gflops_plain": rate})
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines if line.startswith("| ") and "---" not in line}
    assert rows["generator"] == "| generator | 160.0 | 200.0 | 100 |"
    assert rows["reference"] == "| reference | - | 90.0 | 45 |"
    assert rows["quality"] == "| quality | 143.0 | - | - |"
    assert rows["whole run (wall)"] == f"| whole run (wall) | {bench_flow.BEFORE['plain_s']} | 600.0 | 300 |"
    assert bench_flow.stage_table({"plain_s": 600.0}) == []
