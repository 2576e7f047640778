from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.store import RunStore, atomic_open, atomic_write_json, atomic_write_table, read_json, read_table


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "out" / "report.json"
    atomic_write_json(target, {"version": 1})
    with pytest.raises(RuntimeError):
        with atomic_open(target, "w") as handle:
            handle.write('{"version": 2')
            raise RuntimeError("killed mid-write")
    assert read_json(target) == {"version": 1}
    assert [p.name for p in target.parent.iterdir()] == ["report.json"]


def test_tables_round_trip_with_a_csv_copy(tmp_path: Path) -> None:
    table = pd.DataFrame({"label": ["a", "b"], "n": [1, 2]})
    path = atomic_write_table(tmp_path / "t.parquet", table)
    pd.testing.assert_frame_equal(read_table(path), table)
    assert (tmp_path / "t.csv").read_text().splitlines()[0] == "label,n"


def test_stage_completion_marker(tmp_path: Path) -> None:
    store = RunStore(tmp_path, "demo")
    assert not store.is_complete("split", "abc")
    store.mark_complete("split", "abc", {"train": 3})
    assert store.is_complete("split", "abc") and store.read_summary("split", "abc") == {"train": 3}
    store.latest_link("split", "abc")
    assert store.latest_key("split") == "abc" and store.latest_key("generator") is None
