"""The shareable report: every number of the full report, no real image, file name or folder."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd
from report_helpers import EVIL_FILE
from report_html_parse import parse

from flows.cli import main
from pipeline.run_record import read_run_record
from reports.html import render_report
from reports.share import WITHHELD


def _alts(page: str) -> list[str]:
    import re

    return [html.unescape(a) for a in re.findall(r'<img src="[^"]*" alt="([^"]*)"', page)]


def test_the_shareable_copy_withholds_real_images_names_and_folders(finished_run) -> None:
    full = render_report(finished_run.run_dir, finished_run.config)
    shared = render_report(finished_run.run_dir, finished_run.config, share=True)
    stages = read_run_record(finished_run.run_dir)["stages"]
    real_files = pd.read_parquet(stages["split"]["split"])["relpath"].astype(str)
    data_root = str(stages["ingest"]["summary"]["root"])
    store = str(finished_run.runs_root)

    # what the full report shows and the shared copy must not (each checked on both: the test can fail)
    assert html.escape(EVIL_FILE) in full and html.escape(EVIL_FILE) not in shared  # the quarantine list
    assert store in full and store not in shared and data_root in full and data_root not in shared
    named = [name for name in real_files if html.escape(name) in full]
    assert named, "the full report names no real file: nothing to withhold, the fixture changed"
    assert not [name for name in real_files if html.escape(name) in shared]
    full_alts, shared_alts = _alts(full), _alts(shared)
    assert any("real images (top row)" in a for a in full_alts)
    assert any("(real)" in a for a in full_alts if a.startswith("LIME explanations"))
    assert any(a.startswith("Mean true-class LIME importance maps") for a in full_alts)
    assert not any("real images (top row)" in a or "(real)" in a or a.startswith("Closest pair")
                   or a.startswith("Mean true-class") for a in shared_alts)
    assert any("synthetic images only" in a for a in shared_alts)
    assert any("(synthetic)" in a for a in shared_alts if a.startswith("LIME explanations"))
    assert WITHHELD in shared and 'id="share-notice"' in shared and 'id="share-notice"' not in full

    # every number stays: the answer, results and evidence tables are identical
    full_page, shared_page = parse(full), parse(shared)
    for table in ("answer-table", "results-table", "evidence-table"):
        assert shared_page.table(table).body() == full_page.table(table).body(), table
    assert shared_page.ids["verdict"] == full_page.ids["verdict"]


def test_report_share_writes_beside_and_keeps_the_full_report(finished_run, tmp_path: Path) -> None:
    before = finished_run.html_path.read_bytes()
    assert main(["report", "--domain", "demo", "--runs-root", str(finished_run.runs_root), "--run",
                 str(finished_run.run_dir), "--share", "--out", str(tmp_path)]) == 0
    shared = (tmp_path / "report-share.html").read_text(encoding="utf-8")
    assert 'id="share-notice"' in shared and str(finished_run.runs_root) not in shared
    assert finished_run.html_path.read_bytes() == before
