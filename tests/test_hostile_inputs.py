"""The hostile-input catalogue of issue 19: one case per way a careless or hostile user broke b64a618.

Every case asserts the exact one-line message (or the recovered state) and that the user's data
folder is byte-identical afterwards. Cases that need torch train nothing bigger than a 16 px UNet.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from PIL import Image

from folder_snapshot import snapshot
from flows.cli import main
from pipeline.config import deep_merge, load_domain_config
from pipeline.errors import ConfigError, DataError, IntegrityError, TrainingError
from pipeline.stages import ingest_stage, split_stage

REPO = Path(__file__).resolve().parents[1]
TINY = {"image_size": 16, "block_out_channels": [32, 64], "attention_levels": [False, False],
        "layers_per_block": 1, "batch_size": 8, "num_train_timesteps": 100, "warmup_steps": 1}


def _config(tmp: Path, **sections: Any):
    return load_domain_config("demo", "cpu", deep_merge({"runs_root": str(tmp / "runs"), "generator": TINY},
                                                        sections))


def _one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.startswith("synth-augment: error:")]
    assert len(lines) == 1, text
    return lines[0]


# ----------------------------------------------------------------------------------------------
# 1. Class names that differ only outside [A-Za-z0-9._-] never share a synthesis folder or file


@pytest.mark.parametrize("names", [["正常", "肿瘤"], ["a b", "a_b"], ["Глиома", "Менингиома"]])
def test_hostile_class_names_get_their_own_synthesis_folders(tmp_path: Path, names: list[str]) -> None:
    import torch

    from pipeline.config import GeneratorConfig, SynthesisConfig
    from pipeline.generator.model import build_unet
    from pipeline.generator.pipeline import ClassConditionalPipeline
    from pipeline.generator.sampling import make_sampler
    from pipeline.generator.synthesis import synthesize

    torch.manual_seed(0)
    model = build_unet(GeneratorConfig(**TINY), 1, num_classes=2).eval()
    noise = {"num_train_timesteps": 100, "beta_schedule": "squaredcos_cap_v2", "prediction_type": "epsilon"}
    pipe = ClassConditionalPipeline(model, make_sampler("ddim", noise, 2), class_names=names, mode="L")
    pipe.set_progress_bar_config(disable=True)
    manifest = synthesize(pipe, tmp_path, SynthesisConfig(per_class=2, sampler="ddim", steps=2), seed=1,
                          generator_hash="h", progress=False)
    folders = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert len(folders) == 2 and folders[0].startswith("000-") and folders[1].startswith("001-")
    assert manifest.groupby("relpath")["label"].nunique().max() == 1
    assert manifest.groupby("sha256")["label"].nunique().max() == 1
    assert manifest["label"].value_counts().to_dict() == {names[0]: 2, names[1]: 2}


def test_a_manifest_whose_labels_share_a_file_is_refused() -> None:
    from pipeline.generator.synthesis import check_labels_distinct

    table = pd.DataFrame({"relpath": ["images/class/00000.png"] * 2, "label": ["正常", "肿瘤"], "sha256": ["a" * 64] * 2})
    with pytest.raises(DataError) as caught:
        check_labels_distinct(table, "synthesis/k")
    assert str(caught.value) == ("synthesis/k: labels '正常', '肿瘤' share the file images/class/00000.png (1 shared); "
                                 "delete the synthesis folder and re-run")


# ----------------------------------------------------------------------------------------------
# 2. A data file changed during or between runs stops the run, naming it


def test_a_held_out_image_overwritten_after_the_split_stops_training(tmp_path: Path, phantom_dir: Path) -> None:
    from pipeline.image_tensors import load_image_tensors
    from pipeline.stages import load_split

    config = _config(tmp_path)
    split = split_stage(config, ingest_stage(config, phantom_dir, progress=False).manifest_path)
    table = load_split(split.split_path).table
    train, test = table[table["split"] == "train"].iloc[0], table[table["split"] == "test"].iloc[0]
    shutil.copyfile(train["path"], test["path"])  # the careless copy: a training image over a held-out one
    before = snapshot(phantom_dir)
    with pytest.raises(IntegrityError) as caught:
        load_image_tensors(list(table["path"]), list(table["sha256"]), "L", 16, tmp_path / "cache", progress=False)
    message = str(caught.value)
    assert re.fullmatch(rf"{re.escape(test['path'])} changed after ingest \(sha256 [0-9a-f]{{12}}, recorded "
                        rf"{test['sha256'][:12]}\); re-ingest the dataset \(synth-augment validate --domain \.\.\. "
                        rf"--data \.\.\.\) so that every stage sees the current files, then re-run", message)
    assert snapshot(phantom_dir) == before


def test_a_file_rewritten_with_size_and_mtime_kept_is_re_ingested(tmp_path: Path, phantom_dir: Path) -> None:
    config = _config(tmp_path)
    first = ingest_stage(config, phantom_dir, progress=False)
    victim = sorted((phantom_dir / "ring").iterdir())[0]
    stat = victim.stat()
    data = bytearray(victim.read_bytes())
    data[-20] ^= 0xFF  # flip a byte inside the file: the same size, certainly new content
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert victim.stat().st_size == stat.st_size and victim.stat().st_mtime_ns == stat.st_mtime_ns
    before = snapshot(phantom_dir)
    second = ingest_stage(config, phantom_dir, progress=False)
    assert second.key != first.key and not second.cached  # b64a618: the same key, a stale sha256
    assert snapshot(phantom_dir) == before


# ----------------------------------------------------------------------------------------------
# 3. Two runs on one store: the second waits (one line), then reuses what the first computed

HOLDER = """
import sys, time
from pathlib import Path
import pipeline.stages as st
from pipeline.config import load_domain_config
name, root, data, log = sys.argv[1:5]
original = st.validate
def slow_validate(*args, **kwargs):
    with open(log, "a") as handle:
        handle.write(name + "\\n")
    time.sleep(float(sys.argv[5]))
    return original(*args, **kwargs)
st.validate = slow_validate
config = load_domain_config("demo", "cpu", {"runs_root": root})
out = st.ingest_stage(config, data, progress=False)
print(name, "cached" if out.cached else "computed", out.key)
"""


def test_two_processes_share_a_stage_the_second_waits_and_reuses(tmp_path: Path, phantom_dir: Path) -> None:
    log, root = tmp_path / "validated.log", tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.Popen([sys.executable, "-c", HOLDER, "first", str(root), str(phantom_dir), str(log), "4"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not log.is_file() and time.monotonic() < deadline:  # the first holds the lock once it validates
        time.sleep(0.1)
    second = subprocess.run([sys.executable, "-c", HOLDER, "second", str(root), str(phantom_dir), str(log), "0"],
                            env=env, capture_output=True, text=True, timeout=300)
    out_first, err_first = first.communicate(timeout=300)
    assert first.returncode == 0 and second.returncode == 0, err_first + second.stderr
    assert log.read_text().split() == ["first"]  # the work was done once
    key = out_first.split()[-1]
    assert out_first.split()[:2] == ["first", "computed"] and second.stdout.split() == ["second", "cached", key]
    waits = [line for line in second.stderr.splitlines() if "waiting" in line]
    assert waits == [f"synth-augment: waiting for another run that is computing demo/ingest/{key} (lock "
                     f"{root / 'demo' / 'ingest' / (key + '.lock')}); its result will be reused"]


def test_a_folder_swap_never_leaves_a_gap_and_temporaries_are_unique(tmp_path: Path) -> None:
    from pipeline.store import atomic_folder

    target = tmp_path / "export"
    for generation in range(3):
        with atomic_folder(target) as tmp:
            assert re.fullmatch(rf"\.export\.{os.getpid()}-\w+\.tmp", tmp.name)
            (tmp / "weights.bin").write_text(str(generation))
        assert (target / "weights.bin").read_text() == str(generation)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_checkpoint_pruning_never_deletes_a_later_run_s_checkpoints(tmp_path: Path) -> None:
    from pipeline.generator.checkpoint import REQUIRED_KEYS, list_checkpoints, save_checkpoint

    state = {k: 0 for k in REQUIRED_KEYS}
    for step in (10, 20, 30):  # another run on the key got further
        save_checkpoint(tmp_path, {**state, "step": step}, keep=2)
    save_checkpoint(tmp_path, {**state, "step": 5}, keep=2)  # this run, behind it
    assert [s for s, _ in list_checkpoints(tmp_path)] == [5, 20, 30]


# ----------------------------------------------------------------------------------------------
# 4. Finished artefacts are verified before reuse


@pytest.mark.parametrize(("damage", "what"), [
    ("truncate", r"truncated \(\d+ of \d+ bytes\)"),
    ("edit", r"edited since the stage finished \(sha256 differs\)"),
    ("delete", "missing"),
])
def test_a_damaged_stage_output_is_named_and_recomputed(tmp_path: Path, phantom_dir: Path,
                                                        capfd: pytest.CaptureFixture[str], damage: str,
                                                        what: str) -> None:
    config = _config(tmp_path)
    first = ingest_stage(config, phantom_dir, progress=False)
    original = pd.read_parquet(first.manifest_path)
    target = first.manifest_path if damage != "edit" else first.manifest_path.with_suffix(".csv")
    size = target.stat().st_size
    if damage == "truncate":
        with open(target, "r+b") as handle:
            handle.truncate(size // 2)
    elif damage == "edit":
        target.write_text(target.read_text().replace("ring", "rinG"))
    else:
        target.unlink()
    capfd.readouterr()
    before = snapshot(phantom_dir)
    again = ingest_stage(config, phantom_dir, progress=False)
    err = capfd.readouterr().err.strip()
    assert re.fullmatch(rf"synth-augment: {re.escape(str(target))} is {what}; recomputing ingest/{first.key}", err)
    assert not again.cached and again.key == first.key
    pd.testing.assert_frame_equal(pd.read_parquet(again.manifest_path), original)
    assert ingest_stage(config, phantom_dir, progress=False).cached  # repaired: reused again
    assert snapshot(phantom_dir) == before


def test_a_truncated_table_without_a_record_is_one_line_not_a_pyarrow_traceback(tmp_path: Path) -> None:
    from pipeline.store import atomic_write_table, read_table

    path = atomic_write_table(tmp_path / "stage" / "results.parquet", pd.DataFrame({"a": range(100)}))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError) as caught:
        read_table(path)
    assert str(caught.value) == (f"{path} is unreadable (ArrowInvalid); it was damaged after it was written: delete "
                                 f"{path.parent} to recompute that stage")


def test_a_truncated_checkpoint_is_never_continued_from(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    import json

    from pipeline.generator.stage import copy_start, finished_runs, shorter_run
    from pipeline.store import RunStore

    store = RunStore(tmp_path, "demo")
    shorter = store.stage_dir("generator", "short")
    (shorter / "summary.json").write_text(json.dumps({"lineage": "L", "steps": 150}))
    (shorter / "_COMPLETE").write_text("{}")
    (shorter / "checkpoints").mkdir()
    (shorter / "checkpoints" / "ckpt-00000150.pt").write_bytes(b"PK\x03\x04 truncated")
    longer = store.stage_dir("generator", "long") / "checkpoints"
    assert copy_start(shorter_run(finished_runs(store, "L"), 300), longer) is None  # b64a618: 150, then step 1
    assert capfd.readouterr().err.strip() == (f"synth-augment: {shorter / 'checkpoints' / 'ckpt-00000150.pt'} is "
                                              f"unreadable (truncated or damaged); not continuing from it")
    assert not list(longer.glob("*.pt")) if longer.exists() else True


# ----------------------------------------------------------------------------------------------
# 5. Bad inputs: a clear one-line error (exit 2) or a quarantine reason, before anything trains


def test_a_diverging_generator_stops_before_synthesis(tmp_path: Path, phantom_dir: Path) -> None:
    from pipeline.generator.stage import train_generator_stage

    config = _config(tmp_path, generator={"learning_rate": 1e30, "train_steps": 6, "checkpoint_every": 6})
    split = split_stage(config, ingest_stage(config, phantom_dir, progress=False).manifest_path)
    with pytest.raises(TrainingError) as caught:
        train_generator_stage(config, split.split_path, progress=False)
    assert re.fullmatch(r"generator training diverged at step \d \(loss (nan|inf)\); lower generator.learning_rate "
                        r"\(now 1e\+30\) or raise generator.warmup_steps; nothing was synthesised", str(caught.value))
    assert not list((tmp_path / "runs" / "demo" / "generator").glob("*/pipeline"))
    assert not list((tmp_path / "runs" / "demo" / "generator").glob("*/_COMPLETE"))


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    status = main(args)
    return status, _one_line(capsys.readouterr().err)


def test_an_architecture_too_big_for_the_image_size_stops_before_any_stage(tmp_path: Path, phantom_dir: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(phantom_dir)
    status, line = _cli(["run", "--domain", "demo", "--data", str(phantom_dir), "--runs-root", str(tmp_path / "r"),
                         "--quiet", "--set", "classifiers.architectures=[alexnet]",
                         "--set", "classifiers.image_size=32"], capsys)
    assert status == 2 and line == ("synth-augment: error: classifiers.image_size = 32 is too small for alexnet: it "
                                    "needs at least 63 px input; raise classifiers.image_size or drop alexnet from "
                                    "classifiers.architectures")
    assert not (tmp_path / "r" / "demo" / "generator").exists() and snapshot(phantom_dir) == before


def test_a_16_bit_8000_px_png_is_quarantined_cheaply(tmp_path: Path, phantom_dir: Path) -> None:
    Image.new("I;16", (8000, 8000)).save(phantom_dir / "ring" / "huge.png")  # ~120 KB on disk
    before = snapshot(phantom_dir)
    started = time.perf_counter()
    out = ingest_stage(_config(tmp_path), phantom_dir, progress=False)
    quarantine = pd.read_parquet(out.quarantine_path).set_index("relpath")
    assert quarantine.loc["ring/huge.png", "reason"] == "too-large"
    assert quarantine.loc["ring/huge.png", "detail"] == ("8000x8000 I;16 needs ~512 MB to decode (8 bytes per "
                                                         "pixel), over the 240 MB that data.max_pixels=80000000 allows")
    assert time.perf_counter() - started < 120 and snapshot(phantom_dir) == before


LAUGHS = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(6))


@pytest.mark.parametrize(("text", "expected"), [
    (LAUGHS + "name: demo\n", "expands to more than 100,000 values (aliases of aliases?); a config holds a few "
                              "hundred"),
    ("generator: " + "[" * 20000 + "]" * 20000 + "\n", "nested deeper than 32 levels; a config is a few levels deep"),
    ("a: &a [*a]\n", "a recursive alias (an anchor used inside itself) is not allowed"),
    ("description: " + "x" * (1 << 20) + "\n", "1,048,590 bytes is more than the 1,048,576 a config may have"),
])
def test_hostile_yaml_is_refused_in_one_short_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
                                                   expected: str) -> None:
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    started = time.perf_counter()
    status, line = _cli(["split", "--domain", str(path), "--runs-root", str(tmp_path / "r")], capsys)
    assert status == 2 and line == f"synth-augment: error: {path}: {expected}"
    assert time.perf_counter() - started < 30 and not (tmp_path / "r").exists()


def test_a_huge_value_is_echoed_only_as_a_prefix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_domain_config("demo", "cpu", {"seed": "9" * 100_000, "runs_root": str(tmp_path)})
    assert len(str(caught.value)) < 300 and "... (100002 characters)" in str(caught.value)


@pytest.mark.parametrize("seed", ["-1", str(10**24)])
def test_out_of_range_seeds_are_one_line(tmp_path: Path, phantom_dir: Path, capsys: pytest.CaptureFixture[str],
                                         seed: str) -> None:
    status, line = _cli(["split", "--domain", "demo", "--data", str(phantom_dir), "--runs-root",
                         str(tmp_path / "r"), "--seed", seed], capsys)
    assert status == 2 and line.endswith(f"seed = {seed} is invalid; expected an integer in [0, 4294967296)")


def test_an_unwritable_runs_root_is_one_line_naming_it(tmp_path: Path, phantom_dir: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "runs"
    blocker.write_text("a file where the runs root should be")  # root ignores chmod: this fails for everyone
    status, line = _cli(["run", "--domain", "demo", "--data", str(phantom_dir), "--runs-root", str(blocker),
                         "--quiet"], capsys)
    assert status == 2 and line.startswith(f"synth-augment: error: runs root {blocker} is not writable (")
    assert line.endswith("; pass --runs-root to a writable folder")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_runs_root_is_one_line_naming_it(tmp_path: Path, phantom_dir: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "runs"
    root.mkdir(mode=0o555)
    status, line = _cli(["validate", "--domain", "demo", "--data", str(phantom_dir), "--runs-root", str(root)],
                        capsys)
    assert status == 2 and str(root) in line and "writable" in line


def test_report_re_renders_into_another_folder(tmp_path: Path, phantom_dir: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--domain", "demo", "--data", str(phantom_dir), "--runs-root", str(tmp_path / "r"),
                 "--quiet", "--until", "split"]) == 0
    assert main(["report", "--domain", "demo", "--runs-root", str(tmp_path / "r"), "--out",
                 str(tmp_path / "share")]) == 0
    assert (tmp_path / "share" / "report.html").stat().st_size > 1000
    assert not list((tmp_path / "r").rglob("report.html"))


# ----------------------------------------------------------------------------------------------
# 6. File modes follow the umask (real patient images: the user's umask decides who reads them)


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_store_files_honour_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    from pipeline.store import atomic_folder, atomic_write_text

    old = os.umask(umask)
    try:
        path = atomic_write_text(tmp_path / "a.json", "{}")
        with atomic_folder(tmp_path / "folder") as tmp:
            (tmp / "x").write_text("x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode
    assert (tmp_path / "folder").stat().st_mode & 0o777 == mode | ((mode & 0o444) >> 2)


def test_a_moved_dataset_and_a_copied_store_read_only_their_own_files(tmp_path: Path, phantom_dir: Path,
                                                                     capfd: pytest.CaptureFixture[str]) -> None:
    """b64a618: the split kept the old absolute paths (a moved dataset stopped every later stage), the
    synthesis manifest and run.json named the original store's files (a copy read them)."""
    from flows.run import run_domain
    from pipeline.run_record import read_run_record
    from pipeline.stages import load_split

    tiny = {"generator": {"train_steps": 2, "checkpoint_every": 2}, "synthesis": {"per_class": 2, "steps": 2}}
    first = run_domain(_config(tmp_path / "a", **tiny), phantom_dir, progress=False, until="synthesis")
    assert "store:" in (first.run_dir / "run.json").read_text()  # store paths are written relative to the store
    moved = Path(shutil.move(str(phantom_dir), tmp_path / "moved-data"))
    copy = Path(shutil.copytree(tmp_path / "a" / "runs", tmp_path / "b" / "runs"))
    shutil.rmtree(tmp_path / "a")  # any read of the original store now fails loudly
    before = snapshot(moved)
    capfd.readouterr()

    second = run_domain(_config(tmp_path / "b", **tiny), moved, progress=False, until="synthesis")
    err = capfd.readouterr().err
    assert {name: info["cached"] for name, info in second.stages.items()} == \
        {"ingest": False, "split": True, "generator": True, "synthesis": True}  # nothing retrained, nothing re-drawn
    assert "the stored split is re-listed there (same images, same split)" in err
    assert "lists images of another store folder (copied or moved); re-listing this one's" in err
    split = load_split(second.stages["split"]["split"]).table
    assert all(Path(p).is_relative_to(moved.resolve()) and Path(p).is_file() for p in split["path"])
    synthetic = pd.read_parquet(second.stages["synthesis"]["manifest"])
    assert all(Path(p).is_relative_to(copy.resolve()) and Path(p).is_file() for p in synthetic["path"])
    old_record = read_run_record(copy / "demo" / "history" / first.run_dir.name)  # the copied run's record
    assert Path(old_record["stages"]["synthesis"]["manifest"]).is_relative_to(copy)
    assert main(["report", "--domain", "demo", "--runs-root", str(copy), "--run",
                 str(copy / "demo" / "history" / first.run_dir.name)]) == 0
    assert snapshot(moved) == before


def test_a_copied_store_with_a_damaged_synthetic_image_names_it(tmp_path: Path) -> None:
    from pipeline.generator.stage import _relisted_here
    from pipeline.generator.synthesis import image_relpath
    from pipeline.integrity import file_sha256
    from pipeline.store import atomic_write_table

    original = tmp_path / "original" / "synthesis" / "k"
    rel = [image_relpath(0, "正常", 0), image_relpath(1, "肿瘤", 0)]
    for index, name in enumerate(rel):
        (original / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (4, 4), 40 * index).save(original / name)
    table = pd.DataFrame({"path": [str((original / r).resolve()) for r in rel], "relpath": rel,
                          "label": ["正常", "肿瘤"], "class_index": [0, 1], "index": [0, 0],
                          "sha256": [file_sha256(original / r) for r in rel]})
    atomic_write_table(original / "manifest.parquet", table)
    assert not _relisted_here(original / "manifest.parquet")  # its own images: nothing to do
    copy = Path(shutil.copytree(tmp_path / "original", tmp_path / "copy")) / "synthesis" / "k"
    (copy / rel[1]).write_bytes(b"damaged")
    with pytest.raises(DataError) as caught:
        _relisted_here(copy / "manifest.parquet")
    assert re.fullmatch(rf"{re.escape(str((copy / rel[1]).resolve()))} differs from the image recorded \(sha256 "
                        rf"[0-9a-f]{{12}}, recorded {table['sha256'][1][:12]}\); delete {re.escape(str(copy))} to "
                        rf"synthesise the set again", str(caught.value))


def test_report_refuses_to_render_beside_an_edited_results_table(tmp_path: Path, phantom_dir: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "r"
    assert main(["run", "--domain", "demo", "--data", str(phantom_dir), "--runs-root", str(root), "--quiet",
                 "--until", "split"]) == 0
    (table,) = (root / "demo" / "split").glob("*/split.csv")
    table.write_text(table.read_text().replace(",test", ",tset"))  # a hand edit of the published CSV, same size
    status, line = _cli(["report", "--domain", "demo", "--runs-root", str(root)], capsys)
    assert status == 2 and line == (f"synth-augment: error: {table} is edited since the stage finished (sha256 "
                                    f"differs); the report would disagree with it: re-run `synth-augment run` (it "
                                    f"recomputes the split stage) or delete {table.parent}")
