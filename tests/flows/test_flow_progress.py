"""Progress a user can see (issue 20, item 5) through the flow: the long loops' lines land in the flow
run's log on the Prefect server (what the UI and `prefect worker` show), inside the task that ran them.
The flow runs in-process, smoke-sized, up to the generator (seconds, plus the session server's start)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flow_helpers import TINY, PrefectServer
from flows.synth_augment import synth_augment
from pipeline.demo_data import PhantomSpec, make_demo_dataset
from pipeline.progress import INTERVAL_ENV


def test_generator_progress_lines_are_in_the_flow_run_log(prefect_api: PrefectServer, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.logging.handlers import APILogHandler

    monkeypatch.setenv(INTERVAL_ENV, "0")  # a line every step
    data = make_demo_dataset(tmp_path / "data", PhantomSpec(12, 32, "L", 3), progress=False)
    state = synth_augment(domain="demo", data=str(data), overrides=TINY, runs_root=str(tmp_path / "runs"),
                          until="generator", return_state=True)
    assert state.is_completed(), state
    APILogHandler().flush()  # the log worker sends its queue now
    run_id = str(state.state_details.flow_run_id)
    logs = prefect_api.api("POST", "/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200,
                                                  "sort": "TIMESTAMP_ASC"})
    steps = TINY["generator"]["train_steps"]
    generator = [log for log in logs if log["message"].startswith("generator: step ")]
    assert [int(re.match(r"generator: step (\d+)/", log["message"]).group(1)) for log in generator] == \
        list(range(1, steps + 1)), [log["message"] for log in logs]
    assert re.fullmatch(rf"generator: step {steps}/{steps} \(100%\), loss [-+.\deE]+, [\d.]+ (s/step|step/s), "
                        r"done in \d+ s", generator[-1]["message"])
    assert "about" in generator[0]["message"] and all(log["task_run_id"] for log in generator)  # the task's log
    assert all(log["level"] == 20 for log in generator)
    messages = [log["message"] for log in logs]
    assert len(messages) == len(set((m, log["task_run_id"]) for m, log in zip(messages, logs)))  # never twice
