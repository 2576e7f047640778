"""Progress a user can see (issue 20, item 5): pipeline.progress writes rate-limited lines (first step,
every interval, the end) with steps, loss, pace and time left; flows.progress routes them to the
terminal or the Prefect run log and moves the generator's progress artifact.

The reporter is checked line by line with a fake clock; one test trains a real tiny generator (a few
seconds) with a 0 s interval and finds every step's line in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.progress import INTERVAL_ENV, LOGGER_NAME, Progress, duration, interval_from_env, pace


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def progress_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog on the progress logger itself (the CLI/flow handler stops it propagating to the root)."""
    logger = logging.getLogger(LOGGER_NAME)
    old = logger.level, logger.propagate
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # caplog's handler sits on the root logger too: capture each record once
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)
        logger.setLevel(old[0])
        logger.propagate = old[1]


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER_NAME]


def test_lines_at_the_first_step_every_interval_and_the_end(progress_log: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    report = Progress("generator", 100, interval_s=60, clock=clock)
    for step in range(1, 101):
        clock.now = 2.0 * step  # 2 s per step
        report.update(step, 0.5 if step < 100 else 0.0412)
    assert report.finish() is None  # the last update already wrote the end line
    assert _messages(progress_log) == [
        "generator: step 1/100 (1%), loss 0.5, 2.0 s/step, about 3 min left",
        "generator: step 31/100 (31%), loss 0.5, 2.0 s/step, about 2 min left",
        "generator: step 61/100 (61%), loss 0.5, 2.0 s/step, about 1 min left",
        "generator: step 91/100 (91%), loss 0.5, 2.0 s/step, about 18 s left",
        "generator: step 100/100 (100%), loss 0.0412, 2.0 s/step, done in 3 min",
    ]
    record = progress_log.records[-1]
    assert record.levelno == logging.INFO and record.progress == {"name": "generator", "done": 100, "total": 100}


def test_step_zero_and_zero_elapsed_give_no_pace_and_no_time_left() -> None:
    clock = FakeClock(5.0)
    report = Progress("synthesis", 40, unit="image", interval_s=0, clock=clock)
    assert report.update(0) == "synthesis: image 0/40 (0%)"
    assert report.update(8) == "synthesis: image 8/40 (20%)"  # no time has passed: no rate to divide by
    clock.now = 9.0
    assert report.update(16) == "synthesis: image 16/40 (40%), 4.0 image/s, about 6 s left"


def test_total_reached_at_once_and_a_loop_that_stops_early() -> None:
    clock = FakeClock()
    assert Progress("decode 32px", 3, unit="image", clock=clock).update(3) == "decode 32px: image 3/3 (100%), done in 0 s"
    fit = Progress("fit real/resnet18/fold0", 300, interval_s=60, clock=clock)
    clock.now = 0.25
    assert fit.update(1, 1.3862) == "fit real/resnet18/fold0: step 1/300 (0%), loss 1.386, 4.0 step/s, about 1 min left"
    clock.now = 30.0
    assert fit.update(120, 0.41) is None  # within the interval
    assert fit.finish("early_stopping") == ("fit real/resnet18/fold0: step 120/300 (40%), loss 0.41, 4.0 step/s, "
                                            "stopped (early_stopping) in 30 s")
    assert fit.finish() is None and fit.update(121, 0.4) is None  # nothing after the end


def test_a_resumed_loop_measures_its_own_steps_and_the_floor_of_the_share() -> None:
    clock = FakeClock()
    report = Progress("generator", 2000, start=1980, interval_s=60, clock=clock)
    clock.now = 24.0
    assert report.update(1999, 0.03) == "generator: step 1999/2000 (99%), loss 0.03, 1.3 s/step, about 1 s left"


def test_a_disabled_reporter_and_a_tensor_loss(progress_log: pytest.LogCaptureFixture) -> None:
    import torch

    clock = FakeClock()
    quiet, fold = Progress("generator", 10, clock=clock, enabled=False), Progress("reference fold 0", 10, clock=clock)
    clock.now = 12.0
    assert quiet.update(1, 0.2) is None and quiet.finish() is None
    assert fold.update(1, torch.tensor(0.25)) == "reference fold 0: step 1/10 (10%), loss 0.25, 12 s/step, about 2 min left"
    assert _messages(progress_log) == ["reference fold 0: step 1/10 (10%), loss 0.25, 12 s/step, about 2 min left"]


def test_formatting_of_durations_and_pace() -> None:
    assert [duration(s) for s in (0, 42.4, 59.4, 59.6, 3179, 5400, 7560)] == \
        ["0 s", "42 s", "59 s", "1 min", "53 min", "1.5 h", "2.1 h"]
    assert [pace(s, "step") for s in (1.7, 12.3, 0.26, 0.05)] == ["1.7 s/step", "12 s/step", "3.8 step/s", "20 step/s"]


def test_the_interval_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(INTERVAL_ENV, raising=False)
    assert interval_from_env() == 60.0 and Progress("x", 1).interval_s == 60.0
    monkeypatch.setenv(INTERVAL_ENV, "15")
    assert Progress("x", 1).interval_s == 15.0 and Progress("x", 1, interval_s=5).interval_s == 5.0
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv(INTERVAL_ENV, bad)
        with pytest.raises(ConfigError, match=INTERVAL_ENV):
            interval_from_env()


def test_outside_a_prefect_run_the_lines_go_to_stderr_once(capsys: pytest.CaptureFixture[str]) -> None:
    from flows.progress import CHILD_LINE, PROJECT_LOGGER, ProgressHandler, show_progress

    project = logging.getLogger(PROJECT_LOGGER)
    before = (list(project.handlers), project.level, project.propagate)
    try:
        show_progress()
        show_progress()
        assert sum(isinstance(h, ProgressHandler) for h in project.handlers) == 1 and not project.propagate
        Progress("synthesis", 2, unit="image", clock=FakeClock()).update(2)
        err = capsys.readouterr().err
        assert err.count("synthesis: image 2/2 (100%), done in 0 s") == 1
        assert CHILD_LINE.fullmatch(err.strip())  # what relay_progress reads back from a launched child
    finally:
        project.handlers[:] = before[0]
        project.setLevel(before[1])
        project.propagate = before[2]


def test_the_generator_artifact_follows_the_generator_lines_of_its_own_thread(
        progress_log: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    import threading

    from flows.progress import GeneratorProgress
    from pipeline.config import load_domain_config

    artifact = GeneratorProgress(load_domain_config("demo", "cpu", {"runs_root": str(tmp_path)}), "demo-generator-progress")
    seen: list[float] = []
    artifact._update = seen.append  # type: ignore[method-assign]
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(artifact)
    try:
        Progress("generator", 400, interval_s=0, clock=FakeClock(), logger=logger).update(1, 0.9)
        Progress("synthesis", 10, interval_s=0, clock=FakeClock(), logger=logger).update(5)  # another loop
        other = threading.Thread(target=lambda: Progress("generator", 400, clock=FakeClock(), logger=logger).update(9))
        other.start()
        other.join()  # another thread's generator (another flow in this process)
        Progress("generator", 400, interval_s=0, clock=FakeClock(), logger=logger).update(100, 0.1)
    finally:
        logger.removeHandler(artifact)
    assert seen == [0.25, 25.0]


def test_a_launched_childs_progress_lines_are_logged_again_and_the_rest_echoed(
        progress_log: pytest.LogCaptureFixture) -> None:
    import io

    from flows.progress import relay_progress

    child = io.StringIO("The following values were not passed to `accelerate launch`...\n"
                        "12:04:31 generator: step 120/2000 (6%), loss 0.0412, 1.7 s/step, about 53 min left\n"
                        "generator: step 3 is not a progress line\n")
    echo = io.StringIO()
    relay_progress(child, echo)
    assert echo.getvalue() == ("The following values were not passed to `accelerate launch`...\n"
                               "generator: step 3 is not a progress line\n")
    assert _messages(progress_log) == ["generator: step 120/2000 (6%), loss 0.0412, 1.7 s/step, about 53 min left"]
    assert progress_log.records[0].progress == {"name": "generator", "done": 120, "total": 2000}


def test_a_real_tiny_generator_training_logs_every_step(progress_log: pytest.LogCaptureFixture,
                                                       monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """4 optimizer steps of a 16 px generator (a few seconds): with a 0 s interval every step has its line."""
    import re

    import torch

    from pipeline.config import load_domain_config
    from pipeline.generator.data import TrainingData
    from pipeline.generator.train import train_generator

    monkeypatch.setenv(INTERVAL_ENV, "0")
    config = load_domain_config("demo", "cpu", {"runs_root": str(tmp_path / "runs"), "generator": {
        "image_size": 16, "block_out_channels": [32, 64], "attention_levels": [False, False], "layers_per_block": 1,
        "batch_size": 8, "warmup_steps": 1, "num_train_timesteps": 100, "train_steps": 4, "checkpoint_every": 4}})
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 1, 16, 16), dtype=torch.uint8, generator=generator)
    data = TrainingData(images, torch.arange(16) % 2, ["a", "b"], [f"{i:064x}" for i in range(16)], "toy")
    train_generator(config, data, tmp_path / "generator", "toy-training", progress=False)
    lines = [m for m in _messages(progress_log) if m.startswith("generator:")]
    expected = [(1, 25, r"about \d+ s left"), (2, 50, r"about \d+ s left"), (3, 75, r"about \d+ s left"),
                (4, 100, r"done in \d+ s")]
    assert len(lines) == 4, lines
    for line, (step, share, tail) in zip(lines, expected):
        pattern = rf"generator: step {step}/4 \({share}%\), loss [-+.\deE]+, [\d.]+ (s/step|step/s), {tail}"
        assert re.fullmatch(pattern, line), line
