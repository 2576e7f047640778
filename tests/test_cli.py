"""The command line as a user meets it: help, the demo, and clear errors with exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from folder_snapshot import snapshot
from flows.cli import build_parser, main


@pytest.mark.parametrize("command", ["demo", "demo-data", "ingest", "validate", "split", "run", "generator",
                                     "classifiers"])
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: synth-augment" in capsys.readouterr().out


def test_validate_prints_the_quarantine_summary(phantom_dir: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    (phantom_dir / "ring" / "broken.png").write_bytes(b"")
    before = snapshot(phantom_dir)
    code = main(["validate", "--domain", "demo", "--data", str(phantom_dir), "--runs-root", str(tmp_path / "r"),
                 "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "usable images: 120" in out and "quarantined: 1 (empty 1)" in out and "quarantine.csv" in out
    assert snapshot(phantom_dir) == before


def test_split_prints_counts_per_class(phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["split", "--domain", "demo", "--data", str(phantom_dir), "--runs-root", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "24 train / 96 held out" in out and "split table:" in out


def test_user_errors_exit_2_with_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--domain", "demo", "--data", str(tmp_path / "missing"), "--runs-root", str(tmp_path),
                 "--until", "split"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("synth-augment: error: dataset not found") and "Traceback" not in err
    assert main(["run", "--domain", "demo", "--data", str(tmp_path), "--set", "split.cv_folds=1"]) == 2
    assert "split.cv_folds = 1 is invalid" in capsys.readouterr().err
    assert main(["run", "--domain", "nonexistent"]) == 2
    assert "unknown domain 'nonexistent'" in capsys.readouterr().err


def test_run_saves_the_resolved_config(phantom_dir: Path, tmp_path: Path) -> None:
    assert main(["run", "--domain", "demo", "--data", str(phantom_dir), "--runs-root", str(tmp_path),
                 "--seed", "5", "--quiet", "--set", "split.cv_folds=4", "--until", "split"]) == 0
    configs = list((tmp_path / "demo" / "history").glob("*/config.yaml"))
    assert len(configs) == 1
    text = configs[0].read_text()
    assert "seed: 5" in text and "cv_folds: 4" in text
    assert (configs[0].parent / "run.json").is_file()


def test_console_script_entry_point_runs(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "flows.cli", "demo-data", str(tmp_path / "d"),
                             "--per-class", "2", "--size", "32"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "d").rglob("*.png"))) == 8


@pytest.mark.parametrize("argv, handler", [
    (["demo"], "flows.cli._demo"), (["demo-data", "out"], "flows.cli._demo_data"),
    (["ingest", "--domain", "demo"], "flows.cli._ingest"), (["validate", "--domain", "demo"], "flows.cli._ingest"),
    (["split", "--domain", "demo"], "flows.cli._split"), (["run", "--domain", "demo"], "flows.cli.<lambda>"),
    (["generator", "train", "--domain", "demo"], "flows.generator_cli.run"),
    (["generator", "grid", "--domain", "demo", "--out", "g.png"], "flows.generator_cli.run"),
    (["classifiers", "--domain", "demo"], "classifiers.cli.run"),
])
def test_every_command_dispatches_to_the_handler_it_registered(argv: list[str], handler: str) -> None:
    func = build_parser().parse_args(argv).func
    module, _, name = handler.rpartition(".")
    assert (func.__module__, func.__name__) == (module, name)


def test_budget_option_layers_the_budget(tmp_path: Path) -> None:
    from pipeline.cli_args import config_from_args

    args = build_parser().parse_args(["split", "--domain", "brain-mri", "--budget", "cpu-quick",
                                      "--set", "synthesis.per_class=7"])
    config = config_from_args(args)
    assert (config.profile, config.budget, config.generator.train_steps, config.synthesis.per_class) == (
        "cpu", "cpu-quick", 500, 7)  # profile from the budget, budget's train_steps, --set over the budget's 50
