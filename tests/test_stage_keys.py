"""One key per stage, complete (issue 20): each input the keys missed at b64a618 now changes its key.

Every test builds keys only (small tables written here, no image decoded, nothing trained): the key
changes when the input that can change the stage's output changes, and stays when something that
cannot (the runs root, a path, a comment-like setting) changes.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
import torch

from classifiers import weights
from classifiers.stage import StageInputs, read_inputs
from pipeline.config import load_domain_config
from pipeline.generator.outputs import GeneratorOutput
from pipeline.generator.stage import GENERATOR_STAGE, generator_key, plan_generator, planned_synthesis_key
from pipeline.split import TRAIN, assignment_hash
from pipeline.store import RunStore, atomic_write_json, atomic_write_table

N_TRAIN = 12  # per side; classes alternate, so 6 per class on each side


def _config(tmp: Path, runs: str = "runs", **sections: Any):
    overrides = {"runs_root": str(tmp / runs), "split": {"cv_folds": 3}, "data": {"class_names": ["a", "b"]}}
    classifiers = {"architectures": ["resnet18"], "arms": ["real"], "pretrained": False,
                   **sections.pop("classifiers", {})}
    return load_domain_config("demo", "cpu", {**overrides, "classifiers": classifiers, **sections})


def _write_split(folder: Path, patients: list[Any] | None = None, dups: list[Any] | None = None,
                 prefix: str = "/images") -> Path:
    """A stored split: 12 training and 12 held-out rows; ``patients``/``dups`` label the training rows."""
    n = 2 * N_TRAIN
    table = pd.DataFrame({"path": [f"{prefix}/{i}.png" for i in range(n)], "sha256": [f"{i:064x}" for i in range(n)],
                          "label": ["a", "b"] * N_TRAIN, "split": [TRAIN] * N_TRAIN + ["test"] * N_TRAIN,
                          "patient_id": (patients or [None] * N_TRAIN) + [None] * N_TRAIN,
                          "dup_group": (dups or [None] * N_TRAIN) + [None] * N_TRAIN})
    table["patient_id"] = table["patient_id"].astype(object)
    table["dup_group"] = table["dup_group"].astype(object)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_table(folder / "split.parquet", table, csv_copy=False)
    atomic_write_json(folder / "split.json", {"split_hash": assignment_hash(table), "seed": 0, "train_fraction": 0.5,
                                              "grouped": patients is not None})
    return folder / "split.parquet"


def _keys(inputs: StageInputs) -> tuple[str, list[str]]:
    return inputs.key, [spec.key for spec in inputs.specs]


# ----------------------------------------------------------------------------------------------
# Fold formation: patients and near-duplicate groups shape the folds; so does the fold code (73a00b5)

PAIRS = [f"g{i // 2}" for i in range(N_TRAIN)]  # two training rows (one of each label) per patient or group


@pytest.mark.parametrize("column", ["patients", "dups"])
def test_fold_formation_changes_the_fit_and_stage_keys(tmp_path: Path, column: str) -> None:
    config = _config(tmp_path)
    plain = _keys(read_inputs(config, _write_split(tmp_path / "plain"), None))
    grouped = _keys(read_inputs(config, _write_split(tmp_path / "grouped", **{column: PAIRS}), None))
    assert grouped[0] != plain[0] and grouped[1] != plain[1]  # b64a618: the same keys, the old fits served
    elsewhere = _config(tmp_path, runs="other-runs")  # irrelevant: where runs and images live
    moved = _keys(read_inputs(elsewhere, _write_split(tmp_path / "moved", **{column: PAIRS}, prefix="/mnt/x"), None))
    assert moved == grouped


def test_a_change_of_fold_code_changes_the_fit_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commit 73a00b5 made folds keep near-duplicate groups together and no key changed: folds as formed
    before it (groups ignored) must key other fits than folds as formed now."""
    import pipeline.folds

    config = _config(tmp_path)
    split = _write_split(tmp_path / "split", dups=PAIRS)
    now = _keys(read_inputs(config, split, None))
    monkeypatch.setattr(pipeline.folds, "groups_of", lambda manifest: None)
    before = _keys(read_inputs(config, split, None))
    assert before[0] != now[0] and before[1] != now[1]


def test_fold_formation_changes_the_reference_key(tmp_path: Path) -> None:
    from classifiers.reference import reference_key
    from pipeline.stages import load_split

    config = _config(tmp_path)
    plain = reference_key(config, load_split(_write_split(tmp_path / "plain")))
    grouped = reference_key(config, load_split(_write_split(tmp_path / "grouped", patients=PAIRS)))
    assert grouped != plain
    moved = reference_key(_config(tmp_path, runs="elsewhere"),
                          load_split(_write_split(tmp_path / "moved", patients=PAIRS, prefix="/mnt/x")))
    assert moved == grouped


# ----------------------------------------------------------------------------------------------
# Checkpoint content (not its path) and the resolved pretrained weights


def test_checkpoint_content_not_path_enters_the_fit_key(tmp_path: Path) -> None:
    path, copy = tmp_path / "w" / "resnet18.pth", tmp_path / "copy" / "r18.pth"
    path.parent.mkdir()
    copy.parent.mkdir()
    split = _write_split(tmp_path / "split")

    def keys(checkpoint: Path) -> tuple[str, list[str]]:
        config = _config(tmp_path, classifiers={"pretrained": True, "checkpoints": {"resnet18": str(checkpoint)}})
        return _keys(read_inputs(config, split, None))

    path.write_bytes(b"weights, first version")
    first = keys(path)
    path.write_bytes(b"weights, second version")  # same path, other bytes
    second = keys(path)
    assert second[0] != first[0] and set(second[1]).isdisjoint(first[1])  # b64a618: the path was the key
    copy.write_bytes(b"weights, second version")  # other path, same bytes
    assert keys(copy) == second


def test_resolved_pretrained_weights_enter_the_fit_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    split = _write_split(tmp_path / "split")

    def keys(reachable: bool, load_error: str | None = None, runs: str = "runs") -> tuple[str, list[str]]:
        monkeypatch.setattr(weights, "hub_reachable", lambda: reachable)
        monkeypatch.setattr(weights, "hub_load_error", lambda name: load_error)
        return _keys(read_inputs(_config(tmp_path, runs=runs, classifiers={"pretrained": "auto"}), split, None))

    scratch, imagenet = keys(False), keys(True)
    assert imagenet[0] != scratch[0] and set(imagenet[1]).isdisjoint(scratch[1])  # b64a618: "auto" either way
    assert keys(True, load_error="OSError: download failed") == scratch  # auto fell back: the same start
    assert keys(True, runs="elsewhere") == imagenet


def test_a_fit_never_builds_other_weights_than_its_key_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights, "hub_reachable", lambda: False)
    with pytest.raises(weights.PretrainedUnavailableError, match="planned with hub:"):
        weights.build_model("resnet18", 1, 2, "auto", expect="hub:timm/resnet18.a1_in1k")


# ----------------------------------------------------------------------------------------------
# synthesis.per_class


def test_per_class_enters_the_synthesis_key(tmp_path: Path) -> None:
    generator = GeneratorOutput("g", tmp_path, tmp_path / "pipeline", "pipeline-hash", {})

    def key(per_class: int, runs: str = "runs") -> str:
        return planned_synthesis_key(_config(tmp_path, runs=runs, synthesis={"per_class": per_class}), generator)

    assert key(20) != key(10)  # b64a618: one key, the folder's manifest rewritten to whichever ran last
    assert key(20, runs="elsewhere") == key(20)

    def keyed(**synthesis: Any) -> str:
        return planned_synthesis_key(_config(tmp_path, synthesis=synthesis), generator)

    assert len({keyed(per_class_multiple=2.0), keyed(per_class_multiple=3.0), key(20)}) == 3
    # the diversity options enter the key when on and leave it as it was when off (issue 21)
    assert keyed(guidance_interval=[0.3, 5.0]) != keyed() and keyed(cads_noise_scale=0.25) != keyed()
    assert keyed(cads_noise_scale=0.0, cads_interval=[0.5, 0.8]) == keyed() and keyed(guidance_range=[1.0, 3.0]) != keyed()


# ----------------------------------------------------------------------------------------------
# Generator continuation: a warm restart is never stored under the from-scratch key


def _finished_run(store: RunStore, key: str, lineage: str, steps: int) -> None:
    folder = store.stage_dir(GENERATOR_STAGE, key)
    (folder / "checkpoints").mkdir()
    torch.save({"step": steps}, folder / "checkpoints" / f"ckpt-{steps:08d}.pt")
    (folder / "summary.json").write_text(json.dumps({"lineage": lineage, "steps": steps}))
    store.mark_complete(GENERATOR_STAGE, key, {"steps": steps})


def test_a_continued_generator_has_its_own_key(tmp_path: Path) -> None:
    classes = ["a", "b"]

    def config(steps: int, every: int = 50, runs: str = "runs"):
        return _config(tmp_path, runs=runs, generator={"train_steps": steps, "checkpoint_every": every})

    longer = config(300)
    scratch = generator_key(longer, "train-hash", classes)
    assert plan_generator(longer, "train-hash", classes).key == scratch  # nothing to continue: from scratch
    short = config(100)
    short_key = generator_key(short, "train-hash", classes)
    lineage = generator_key(short, "train-hash", classes, with_steps=False)
    _finished_run(RunStore(short.runs_root, short.name), short_key, lineage, 100)
    plan = plan_generator(longer, "train-hash", classes)
    assert plan.key != scratch and plan.start is not None and plan.start[:2] == (short_key, 100)  # b64a618: scratch
    assert plan_generator(config(300, every=100), "train-hash", classes).key == plan.key  # checkpoint_every: same

    split = _write_split(tmp_path / "split")  # the flow's cache key is the stage's key
    from flows.run import STAGES
    from pipeline.stages import load_split

    flow_key = next(s for s in STAGES if s.name == "generator").cache_key(longer, {"split": SimpleNamespace(
        split_path=split)})
    assert flow_key == plan_generator(longer, load_split(split).training_hash, classes).key


def test_an_interrupted_from_scratch_run_keeps_its_key(tmp_path: Path) -> None:
    classes = ["a", "b"]
    short = _config(tmp_path, generator={"train_steps": 100, "checkpoint_every": 50})
    longer = _config(tmp_path, generator={"train_steps": 300, "checkpoint_every": 50})
    store = RunStore(longer.runs_root, longer.name)
    scratch = generator_key(longer, "h", classes)
    (store.stage_dir(GENERATOR_STAGE, scratch) / "checkpoints").mkdir()
    torch.save({}, store.stage_dir(GENERATOR_STAGE, scratch) / "checkpoints" / "ckpt-00000050.pt")
    _finished_run(store, generator_key(short, "h", classes), generator_key(short, "h", classes, with_steps=False), 100)
    assert plan_generator(longer, "h", classes).key == scratch  # resumes its own run, never continues another


def test_a_new_count_starts_from_the_finished_set_of_its_series(tmp_path: Path) -> None:
    """per_class in the key must not cost the images already made: image i of class c is the same picture."""
    from pipeline.generator.stage import SYNTHESIS_STAGE, _start_from_sibling
    from pipeline.generator.synthesis import image_relpath

    store = RunStore(tmp_path / "runs", "demo")
    old = store.stage_dir(SYNTHESIS_STAGE, "old")
    rows = [(c, name, i, image_relpath(c, name, i)) for c, name in enumerate(["a", "b"]) for i in range(3)]
    for _, _, i, rel in rows:
        (old / rel).parent.mkdir(parents=True, exist_ok=True)
        (old / rel).write_bytes(f"png {rel}".encode())
    atomic_write_table(old / "manifest.parquet", pd.DataFrame(rows, columns=["class_index", "label", "index", "relpath"]),
                       csv_copy=False)
    store.mark_complete(SYNTHESIS_STAGE, "old", {"series": "S", "per_class": 3})
    other_series, new = store.stage_dir(SYNTHESIS_STAGE, "other"), store.stage_dir(SYNTHESIS_STAGE, "new")
    _start_from_sibling(store, "T", other_series, [2, 2])
    assert not list(other_series.rglob("*.png"))  # another series: nothing shared
    _start_from_sibling(store, "S", new, [2, 2])
    assert sorted(p.relative_to(new).as_posix() for p in new.rglob("*.png")) == sorted(
        rel for _, _, i, rel in rows if i < 2)
    assert all((new / rel).read_bytes() == (old / rel).read_bytes() for _, _, i, rel in rows if i < 2)
    per_class = store.stage_dir(SYNTHESIS_STAGE, "multiple")  # counts that differ by class (per_class_multiple)
    _start_from_sibling(store, "S", per_class, [1, 3])
    assert sorted(p.relative_to(per_class).as_posix() for p in per_class.rglob("*.png")) == sorted(
        rel for c, _, i, rel in rows if i < [1, 3][c])
