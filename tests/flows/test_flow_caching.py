"""The flow in-process (reporting to the session's Prefect server): caching by run-store keys,
recomputation when the data changes, fit-level reuse, resume of a killed generator training,
and the Dask fan-out of the classifier fits."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flow_helpers import REPO, TINY, PrefectServer
from flows.synth_augment import PREFECT_RECORD_PREFIX, synth_augment
from pipeline.demo_data import PhantomSpec, make_demo_dataset, render_phantom
from pipeline.imageio import save_png
from pipeline.store import read_json


def _states(result: dict) -> dict[str, tuple[bool, str]]:
    return {name: (info["cached"], info["prefect_state"]) for name, info in result["stages"].items()}


def test_unchanged_rerun_reuses_every_stage_and_new_data_recomputes_from_the_split(
        prefect_api: PrefectServer, tmp_path: Path) -> None:
    data = make_demo_dataset(tmp_path / "data", PhantomSpec(26, 32, "L", 3), progress=False)
    runs = tmp_path / "runs"
    kwargs = dict(domain="demo", data=str(data), overrides=TINY, runs_root=str(runs))

    first = synth_augment(**kwargs)
    assert not any(cached for cached, _ in _states(first).values()), _states(first)
    assert first["stages"]["classifiers"]["fits"] == 4  # 2 arms x 1 architecture x 2 folds, one task each
    generator_dir = Path(first["stages"]["generator"]["pipeline"]).parent
    assert list(generator_dir.glob(f"{PREFECT_RECORD_PREFIX}*")), "Prefect result not persisted in the run store"
    trained_at = (generator_dir / "pipeline" / "model_index.json").stat().st_mtime_ns

    second = synth_augment(**kwargs)
    states = _states(second)
    assert states["generator"] == (True, "Cached") and states["synthesis"] == (True, "Cached"), states
    assert states["split"][0] and states["ingest"][0] and states["classifiers"][0], states
    assert (generator_dir / "pipeline" / "model_index.json").stat().st_mtime_ns == trained_at  # not retrained
    for stage in ("split", "generator", "synthesis", "classifiers"):
        assert second["stages"][stage]["key"] == first["stages"][stage]["key"]

    # One more arm: the classifier stage key changes; generator, synthetic set and the four finished
    # fits are served from their Prefect records (Cached), two fits are new.
    more_arms = copy.deepcopy(TINY)
    more_arms["classifiers"]["arms"] = ["synthetic", "real", "real+aug"]
    third = synth_augment(**{**kwargs, "overrides": more_arms})
    assert _states(third)["generator"] == (True, "Cached") and _states(third)["synthesis"] == (True, "Cached")
    assert (third["stages"]["classifiers"]["fits"], third["stages"]["classifiers"]["fits_cached"]) == (6, 4)

    # One new image: the data hash changes, so split, generator and synthesis are recomputed.
    rng = np.random.default_rng(99)
    save_png(np.round(render_phantom("ring", 32, rng) * 255).astype(np.uint8), data / "ring" / "extra.png")
    fourth = synth_augment(**kwargs)
    states = _states(fourth)
    assert not any(states[s][0] for s in ("ingest", "split", "generator", "synthesis", "classifiers")), states
    assert states["generator"][1] == "Completed"
    assert fourth["stages"]["split"]["key"] != first["stages"]["split"]["key"]
    assert fourth["stages"]["ingest"]["summary"]["usable"] == first["stages"]["ingest"]["summary"]["usable"] + 1


def test_a_stale_prefect_record_is_not_trusted(prefect_api: PrefectServer, tmp_path: Path) -> None:
    """The run store is the authority: a stage whose _COMPLETE marker is gone runs again."""
    data = make_demo_dataset(tmp_path / "data", PhantomSpec(26, 32, "L", 5), progress=False)
    kwargs = dict(domain="demo", data=str(data), overrides=TINY, runs_root=str(tmp_path / "runs"), until="synthesis")
    first = synth_augment(**kwargs)
    synthesis_dir = Path(first["stages"]["synthesis"]["manifest"]).parent
    (synthesis_dir / "_COMPLETE").unlink()
    second = synth_augment(**kwargs)
    assert _states(second)["generator"] == (True, "Cached")
    assert _states(second)["synthesis"][1] == "Completed"  # recomputed (filled in), not served from Prefect
    assert (synthesis_dir / "_COMPLETE").is_file()


def test_a_selected_real_seeded_set_is_cached_and_follows_the_reference(prefect_api: PrefectServer,
                                                                         tmp_path: Path) -> None:
    """With selection and real-seeded synthesis the flow's synthesis key is the stage's (the plan's hash, which
    holds the reference's key): an unchanged rerun is Cached; a classifiers.* change that retrains the reference
    (the real arm) makes a new decision and a new set; one that leaves the reference alone (the arm list) does not."""
    data = make_demo_dataset(tmp_path / "data", PhantomSpec(26, 32, "L", 4), progress=False)
    selecting = copy.deepcopy(TINY)
    selecting["synthesis"].update(select=True, mode="real-seeded", select_per_class=2, guidance_candidates=[1.0, 2.0],
                                  strength_candidates=[0.5], checkpoint_candidates=1)
    kwargs = dict(domain="demo", data=str(data), runs_root=str(tmp_path / "runs"), until="synthesis")

    first = synth_augment(**kwargs, overrides=selecting)
    assert first["stages"]["reference"]["prefect_state"] == "Completed"
    again = synth_augment(**kwargs, overrides=selecting)
    assert _states(again)["reference"] == (True, "Cached") and _states(again)["synthesis"] == (True, "Cached")
    assert again["stages"]["synthesis"]["key"] == first["stages"]["synthesis"]["key"]

    other_arms = copy.deepcopy(selecting)
    other_arms["classifiers"]["arms"] = ["real"]  # the reference's fits do not depend on the arm list
    assert _states(synth_augment(**kwargs, overrides=other_arms))["synthesis"] == (True, "Cached")

    retrained = copy.deepcopy(selecting)
    retrained["classifiers"]["learning_rate"] = 0.002  # another real arm: another reference, a new decision
    third = synth_augment(**kwargs, overrides=retrained)
    assert third["stages"]["reference"]["key"] != first["stages"]["reference"]["key"]
    assert _states(third)["synthesis"] == (False, "Completed")
    assert third["stages"]["synthesis"]["key"] != first["stages"]["synthesis"]["key"]


RESUME_SCRIPT = """
import json, sys
from flows.synth_augment import synth_augment
synth_augment(domain="demo", data=sys.argv[1], runs_root=sys.argv[2], until="generator",
              overrides=json.loads(sys.argv[3]))
"""
SLOW_GENERATOR = {"generator": {"image_size": 16, "block_out_channels": [32, 64], "attention_levels": [False, False],
                                "train_steps": 80, "batch_size": 64, "warmup_steps": 1, "num_train_timesteps": 100,
                                "checkpoint_every": 10, "keep_checkpoints": 2}}


def test_killed_flow_resumes_generator_training_from_its_checkpoint(prefect_api: PrefectServer,
                                                                      tmp_path: Path) -> None:
    data = make_demo_dataset(tmp_path / "data", PhantomSpec(26, 32, "L", 8), progress=False)
    runs = tmp_path / "runs"
    process = subprocess.Popen([sys.executable, "-c", RESUME_SCRIPT, str(data), str(runs), json.dumps(SLOW_GENERATOR)],
                               cwd=REPO, env={**prefect_api.env, "PYTHONPATH": str(REPO)}, start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    checkpoints: list[Path] = []
    while time.monotonic() < deadline and process.poll() is None:
        checkpoints = list(runs.glob("demo/generator/*/checkpoints/ckpt-*.pt"))
        if checkpoints:
            break
        time.sleep(0.05)
    assert checkpoints, f"no checkpoint before the deadline:\n{process.communicate()[0].decode()[-3000:]}"
    os.killpg(process.pid, signal.SIGKILL)  # the flow's process, mid-training
    process.wait(30)
    assert not list(runs.glob("demo/generator/*/_COMPLETE")), "training finished before the kill"
    killed_at = max(int(p.stem.split("-")[1]) for p in runs.glob("demo/generator/*/checkpoints/ckpt-*.pt"))

    resumed = synth_augment(domain="demo", data=str(data), runs_root=str(runs), until="generator",
                            overrides=SLOW_GENERATOR)
    summary = resumed["stages"]["generator"]["summary"]
    assert resumed["stages"]["generator"]["prefect_state"] == "Completed"
    assert summary["resumed_from"] == killed_at  # continued from the newest checkpoint, not from step 0
    assert summary["steps"] == 80


def _comparable(results_path: str) -> pd.DataFrame:
    table = pd.read_parquet(results_path)
    timing = [c for c in table.columns if c.endswith("_seconds") or c in ("device", "data_wait_share")]
    return table.drop(columns=timing).sort_values(["arm", "architecture", "fold"]).reset_index(drop=True)


@pytest.mark.slow
def test_dask_fan_out_gives_the_threaded_results_table(prefect_api: PrefectServer, tmp_path: Path) -> None:
    import torch

    data = make_demo_dataset(tmp_path / "data", PhantomSpec(26, 32, "L", 9), progress=False)
    threads_root, dask_root = tmp_path / "threads", tmp_path / "dask"
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each single-threaded Dask worker: same kernels, same numbers
    try:
        threaded = synth_augment(domain="demo", data=str(data), overrides=TINY, runs_root=str(threads_root))
    finally:
        torch.set_num_threads(threads_before)
    # Same generator and synthetic set (copied), fits and results recomputed on a 2-worker LocalCluster.
    shutil.copytree(threads_root, dask_root)
    for stage in ("classifiers", "classifier-fits"):
        shutil.rmtree(dask_root / "demo" / stage)
    dasked = synth_augment(domain="demo", data=str(data), overrides=TINY, runs_root=str(dask_root),
                           task_runner="dask", dask_workers=2)
    assert dasked["stages"]["classifiers"]["fits"] == 4 and dasked["stages"]["classifiers"]["fits_cached"] == 0
    assert read_json(Path(dasked["run_dir"]) / "run.json")["meta"]["task_runner"] == "dask"
    pd.testing.assert_frame_equal(_comparable(threaded["stages"]["classifiers"]["results"]),
                                  _comparable(dasked["stages"]["classifiers"]["results"]))
