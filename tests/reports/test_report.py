"""The HTML report of a finished phantom run: every section and table, numbers equal to the result files,
escaping, and re-rendering from files only."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from report_helpers import CLASSES, EVIL_CLASS, EVIL_FILE
from report_html_parse import parse

from flows.cli import main
from pipeline.run_record import read_run_record
from reports.html import SECTIONS
from reports.paired import compare, holm


def _html(finished_run) -> str:
    return finished_run.html_path.read_text(encoding="utf-8")


def test_run_writes_the_report_and_records_every_stage(finished_run) -> None:
    record = read_run_record(finished_run.run_dir)
    assert list(finished_run.record.stages) == ["ingest", "split", "generator", "reference", "synthesis", "quality",
                                                "classifiers", "explain", "report"]
    assert set(record["stages"]) == set(finished_run.record.stages)
    assert record["stages"]["report"]["path"] == str(finished_run.html_path)
    assert record["stages"]["report"]["size_bytes"] == finished_run.html_path.stat().st_size
    assert record["meta"]["code_version"] and record["meta"]["command"]


def test_every_section_in_order_and_every_table_has_header_cells(finished_run) -> None:
    page = parse(_html(finished_run))
    assert page.sections == [anchor for anchor, _ in SECTIONS]
    for ident in ("answer-table", "trend-table", "data-table", "quarantine-table", "generator-table",
                  "results-table", "evidence-table", "provenance-table", "stages-table"):
        table = page.table(ident)
        assert table.rows, ident
        assert any(cell.tag == "th" for cell in table.rows[0]), f"{ident} has no header cell"
    assert [t for t in page.tables if "explanation-table" in (t.id or "")] == []  # class tables, not ids
    assert "script" not in page.tags  # readable without JavaScript; nothing executable at all
    for image in page.images:
        assert image["src"].startswith("data:image/png;base64,")
        assert len(image.get("alt", "")) > 20
    assert len(page.images) >= 4 + 4 + 4 + 4  # grids, confusion matrices, curves, explanation figures
    quality = [t for t in page.tables if t.section == "quality"]
    assert quality and all(t.rows and t.rows[0][0].tag == "th" for t in quality)  # the quality stage ran: its tables


def test_answer_table_equals_results_file_and_paired_test(finished_run) -> None:
    stages = read_run_record(finished_run.run_dir)["stages"]
    results = pd.read_parquet(stages["classifiers"]["results"])
    results["fold"] = results["fold"].astype(str)
    # expected choice, computed here from the fold rows: the lowest mean validation loss per arm (select_on default)
    folds = results[results["fold"] != "ensemble"]
    val = folds.groupby(["arm", "architecture"], sort=False)["val_loss"].mean().reset_index()
    picked = {arm: g.sort_values("val_loss", kind="stable").iloc[0]["architecture"] for arm, g in val.groupby("arm")}
    ensembles = results[results["fold"] == "ensemble"].set_index(["arm", "architecture"])
    page = parse(_html(finished_run))
    table = page.table("answer-table")
    rows = {r[0].text: r for r in table.body()}
    assert set(rows) == set(results["arm"])
    for arm, cells in rows.items():
        row = ensembles.loc[(arm, picked[arm])]
        assert cells[1].text == picked[arm]
        assert float(cells[2].attrs["data-value"]) == row["test_accuracy"]
        assert cells[2].text == f"{100 * row['test_accuracy']:.1f}%"
        assert float(cells[4].attrs["data-value"]) == row["f1_macro"]
    # the paired test: recomputed from the stored scores of the frozen fits
    stage_dir = finished_run.run_dir.parents[1] / "classifiers" / stages["classifiers"]["key"]
    test = pd.read_parquet(stage_dir / "test_manifest.parquet")
    y = np.array([CLASSES.index(label) for label in test["label"]])

    def predictions(arm: str) -> np.ndarray:
        keys = ensembles.loc[(arm, picked[arm]), "fit_key"].split(",")
        return np.mean([np.load(stage_dir / "scores" / "test" / f"{k}.npy") for k in keys], axis=0).argmax(1)

    # Holm runs over every comparison the answer makes: each synthetic-using arm against real-only and, when the
    # run trained it, against real+aug (the demo does: four comparisons, so the adjusted p is not the raw one)
    references = [r for r in ("real", "real+aug") if r in rows]
    comparisons = [(a, r) for r in references for a in sorted(rows) if "synthetic" in a]
    assert len(comparisons) == 2 * len(references)
    raw = {f"{a} vs {r}": compare(y, predictions(r), predictions(a), 500, finished_run.config.seed)
           for a, r in comparisons}
    adjusted = holm(raw)["synthetic vs real"]
    assert adjusted.comparisons == len(comparisons) and adjusted.p_adjusted >= raw["synthetic vs real"].p_value
    assert rows["synthetic"][6].text == f"{adjusted.statistics()}: {adjusted.verdict()}"
    assert rows["real"][6].text == "reference"
    if "real+aug" in rows:
        versus_aug = holm(raw)["synthetic vs real+aug"]
        assert rows["synthetic"][7].text == f"{versus_aug.statistics()}: {versus_aug.verdict()}"


def test_results_data_and_evidence_tables_equal_the_files(finished_run) -> None:
    stages = read_run_record(finished_run.run_dir)["stages"]
    page = parse(_html(finished_run))
    results = pd.read_parquet(stages["classifiers"]["results"])
    ensemble = results[results["fold"].astype(str) == "ensemble"].set_index(["arm", "architecture"])
    body = page.table("results-table").body()
    assert len(body) == len(ensemble)
    for cells in body:
        row = ensemble.loc[(cells[0].text, cells[1].text)]
        assert float(cells[5].attrs["data-value"]) == row["test_accuracy"]
        assert float(cells[6].attrs["data-value"]) == row["f1_macro"]
        folds = results[(results["arm"] == cells[0].text) & (results["fold"].astype(str) != "ensemble")]
        assert cells[2].text == f"{100 * folds['test_accuracy'].mean():.1f} ± {100 * folds['test_accuracy'].std():.1f}"

    split = stages["split"]["summary"]["per_class"]
    synthetic = pd.read_parquet(stages["synthesis"]["manifest"])["label"].value_counts()
    data_rows = {c[0].text: [x.text for x in c[1:]] for c in page.table("data-table").body()}
    assert set(data_rows) == set(CLASSES)
    for label, cells in data_rows.items():
        assert cells[1:] == [str(split[label]["train"]), str(split[label]["test"]), str(synthetic[label])]

    comparison = pd.read_parquet(f"{stages['explain']['directory']}/comparison.parquet")
    evidence = page.table("evidence-table").body()
    assert len(evidence) == len(comparison) == len(CLASSES) * len(set(results["arm"]))
    for cells, row in zip(evidence, comparison.itertuples()):
        assert (cells[0].text, cells[1].text) == (row.arm, getattr(row, "_2"))
        for cell, value in ((cells[4], row.correlation), (cells[5], row.iou_top)):
            got = float(cell.attrs["data-value"])
            assert (math.isnan(got) and math.isnan(value)) or got == value

    provenance = {c[0].text: c[1].text for c in page.table("provenance-table").rows}
    assert provenance["split hash"] == stages["split"]["split_hash"]
    assert provenance["classifiers key"] == stages["classifiers"]["key"]
    quarantine = page.table("quarantine-table").body()
    assert quarantine[0][0].text == "empty" and quarantine[0][1].text.endswith("/" + EVIL_FILE)


def test_user_strings_are_escaped(finished_run) -> None:
    html = _html(finished_run)
    assert EVIL_CLASS not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    page = parse(html)
    assert EVIL_CLASS in {c[0].text for c in page.table("data-table").body()}  # shown as text


def test_rerender_reads_only_files(finished_run, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import classifiers.train
    import pipeline.generator.stage
    import reports.lime_explain

    def forbidden(*args, **kwargs):
        raise AssertionError("re-rendering must not train or explain")

    for module, name in ((classifiers.train, "run_fit"), (pipeline.generator.stage, "train_generator"),
                         (reports.lime_explain, "explain"), (reports.lime_explain, "explain_stage"),
                         (reports.lime_explain, "load_fit")):
        monkeypatch.setattr(module, name, forbidden)
    before = parse(_html(finished_run))
    finished_run.html_path.unlink()
    assert main(["report", "--domain", "demo", "--runs-root", str(finished_run.runs_root)]) == 0
    assert str(finished_run.html_path) in capsys.readouterr().out
    after = parse(_html(finished_run))
    assert after.sections == before.sections
    for ident in ("answer-table", "results-table", "evidence-table", "data-table"):
        assert [[c.text for c in r] for r in after.table(ident).rows] == \
               [[c.text for c in r] for r in before.table(ident).rows]


def test_report_command_without_a_run_is_a_clear_error(tmp_path, capsys) -> None:
    assert main(["report", "--domain", "demo", "--runs-root", str(tmp_path)]) == 2
    assert "no finished run" in capsys.readouterr().err


def test_missing_stages_render_as_not_run(finished_run, tmp_path) -> None:
    from reports.html import report_stage

    run_dir = tmp_path / "demo" / "history" / "20990101T000000.000000Z"
    run_dir.mkdir(parents=True)
    record = read_run_record(finished_run.run_dir)
    record["stages"] = {k: v for k, v in record["stages"].items() if k in ("ingest", "split")}
    (run_dir / "run.json").write_text(json.dumps(record))
    page = parse(report_stage(None, run_dir).path.read_text(encoding="utf-8"))
    assert page.sections == [anchor for anchor, _ in SECTIONS]
    assert "Not run" in page.ids["explanations-notrun"]
    assert page.table("data-table").body()


def test_quality_section_reads_quality_json_and_gate(tmp_path) -> None:
    from PIL import Image

    from reports.sections.quality import quality_section
    from reports.sections.warnings import warnings

    (tmp_path / "pairs").mkdir()
    Image.new("L", (20, 8), 128).save(tmp_path / "pairs" / "pair-01.png")
    report = {"schema": 1, "metrics": [
        {"metric": "frechet_distance", "label": "Fréchet distance, domain features", "class": "all",
         "synthetic": 12.5, "synthetic_std": None, "reference": 3.25, "reference_std": None, "higher_is_better": False},
        {"metric": "kid", "label": "KID", "class": "round", "synthetic": 0.5, "synthetic_std": 0.1, "reference": 0.1,
         "reference_std": 0.01, "higher_is_better": False}],
        "memorisation": {"quantile": 0.01, "flagged_fraction": 0.25, "per_class": {EVIL_CLASS: {
            "images": 8, "flagged": 2, "fraction": 0.25}}, "closest_pairs": [
            {"rank": 1, "image": "pairs/pair-01.png", "synthetic": "s.png", "training": "t.png", "label": EVIL_CLASS,
             "pixel_distance": 0.5, "memorised": True}]},
        "label_consistency": {"cas": 0.75, "overall_agreement": 0.75, "per_class_agreement": {"round": 0.75}}}
    (tmp_path / "quality.json").write_text(json.dumps(report))
    gate = {"action": "warn", "passed": False, "messages": ["quality gate: recall too low"],
            "checks": [{"metric": "recall", "value": 0.1, "threshold": 0.3, "op": ">=", "passed": False}],
            "filter": {"dropped": 3}}
    stages = {"quality": {"report": str(tmp_path / "quality.json"), "gate": gate, "summary": {"notes": []}}}
    section = quality_section(stages)
    assert section["available"]
    captions = [t["caption"] for t in section["tables"]]
    assert len(captions) == 4 and "FAILED" in captions[-1]
    assert section["tables"][0]["rows"] == [("Fréchet distance, domain features", "all", "12.500", "3.250", "lower")]
    assert section["figures"][0]["src"].startswith("data:image/png;base64,")
    assert warnings(stages, None, "demo", None) == [
        "quality gate: recall too low", "quality filter dropped 3 synthetic image(s) before the classifiers trained."]
    assert quality_section({})["available"] is False
