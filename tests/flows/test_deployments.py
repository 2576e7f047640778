"""What users type: `prefect deployment run synth-augment/<domain>` against a real Prefect server.

The server, the process work pool, the deployments (from prefect.yaml, via `prefect deploy --all`)
and a worker are started here; the demo deployment runs through the CLI with the smoke budget.
The same end-to-end run is repeated on a PostgreSQL-backed server.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd
import pytest
import yaml

from flow_helpers import REPO, PrefectServer

DEPLOYMENTS = ("demo", "brain-mri", "covid-ct", "all-leukemia")
RUN_TIMEOUT_S = 420


def prefect_yaml() -> dict:
    return yaml.safe_load((REPO / "prefect.yaml").read_text())


def test_prefect_yaml_declares_one_nightly_non_overlapping_deployment_per_domain() -> None:
    from prefect.client.schemas.schedules import CronSchedule

    deployments = {d["name"]: d for d in prefect_yaml()["deployments"]}
    assert set(deployments) == set(DEPLOYMENTS)
    for name, deployment in deployments.items():
        assert deployment["entrypoint"] == "flows/synth_augment.py:synth_augment"
        assert deployment["parameters"]["domain"] == name
        assert deployment["concurrency_limit"] == 1
        assert deployment["enforce_parameter_schema"] is True
        assert deployment["work_pool"]["name"] == "synth-augment"
        (entry,) = deployment["schedules"]
        schedule = CronSchedule(cron=entry["cron"], timezone=entry["timezone"])  # validates cron + timezone
        minute, hour, day, month, weekday = schedule.cron.split()
        assert minute.isdigit() and hour.isdigit() and (day, month, weekday) == ("*", "*", "*"), \
            f"{name}: {schedule.cron!r} is not once a day"
        assert 0 <= int(hour) < 6, f"{name}: {schedule.cron!r} does not run at night"
        assert schedule.timezone
        # a schedule runs only where its data is known: the demo makes its own; the others wait for `data`
        assert entry["active"] is (name == "demo"), f"{name}: a schedule without data would fail every night"
        if name != "demo":
            assert deployment["parameters"]["data"] is None


def _run_demo(server: PrefectServer, runs_root: Path) -> tuple[str, float]:
    """`prefect deployment run synth-augment/demo` with the smoke budget; returns (flow run id, seconds)."""
    server.deploy()
    started = time.perf_counter()
    result = server.cli("deployment", "run", "synth-augment/demo", "--param", "budget=smoke",
                        "--param", f"runs_root={runs_root}", "--watch", "--watch-timeout", str(RUN_TIMEOUT_S),
                        check=False, timeout=RUN_TIMEOUT_S + 60)
    seconds = time.perf_counter() - started
    match = re.search(r"UUID:\s*([0-9a-f-]{36})", result.stdout)
    assert match, result.stdout + result.stderr
    run_id = match.group(1)
    state = server.api("GET", f"/flow_runs/{run_id}")["state"]
    worker_log = (server.home / "worker.log").read_text()[-6000:]
    assert state["type"] == "COMPLETED", f"{state}\n{result.stdout}\n{result.stderr}\nworker:\n{worker_log}"
    return run_id, seconds


def _assert_run_outputs(server: PrefectServer, run_id: str, runs_root: Path) -> None:
    results = list((runs_root / "demo" / "classifiers").glob("*/results.csv"))
    assert len(results) == 1, list(runs_root.rglob("*"))[:50]
    table = pd.read_csv(results[0])
    assert {"synthetic", "real", "real+aug", "real+synthetic"} <= set(table["arm"])
    assert table["test_accuracy"].between(0, 1).all()
    assert list((runs_root / "demo" / "history").glob("*/run.json"))

    artifacts = server.api("POST", "/artifacts/filter",
                           {"artifacts": {"flow_run_id": {"any_": [run_id]}}, "limit": 50})
    by_key = {a["key"]: a for a in artifacts if a["key"]}
    assert {"demo-summary", "demo-results", "demo-report", "demo-generator-progress"} <= set(by_key), by_key.keys()
    assert by_key["demo-summary"]["type"] == "markdown" and "synthetic / resnet18" in by_key["demo-summary"]["data"]
    assert by_key["demo-results"]["type"] == "table"
    assert by_key["demo-generator-progress"]["data"] == 100.0
    task_runs = server.api("POST", "/task_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}, "limit": 200})
    tags = {run["name"].rsplit("-", 1)[0]: set(run["tags"]) for run in task_runs}
    assert sum(run["name"].startswith("fit-") for run in task_runs) == 8  # the demo's 4 arms x 1 architecture x 2 folds
    assert {"gpu"} <= tags["generator"] and {"gpu"} <= tags["synthesis"] and {"gpu"} <= tags["fit"]
    assert "gpu" not in tags["ingest"] and "gpu" not in tags["split"]
    link = by_key["demo-report"]["data"]
    target = Path(unquote(urlparse(re.search(r"\((file://[^)]+)\)", link).group(1)).path))
    assert target.is_file() and target.is_relative_to(runs_root), link


def test_demo_deployment_runs_end_to_end_on_the_server(prefect_server: PrefectServer, tmp_path: Path) -> None:
    run_id, seconds = _run_demo(prefect_server, tmp_path / "runs")
    _assert_run_outputs(prefect_server, run_id, tmp_path / "runs")
    print(f"demo deployment (smoke budget) through server + worker: {seconds:.1f}s")


def test_demo_deployment_runs_end_to_end_on_postgresql(postgres_server: PrefectServer, tmp_path: Path) -> None:
    assert postgres_server.env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql")
    run_id, seconds = _run_demo(postgres_server, tmp_path / "runs")
    _assert_run_outputs(postgres_server, run_id, tmp_path / "runs")
    print(f"demo deployment (smoke budget) on PostgreSQL: {seconds:.1f}s")


def test_server_holds_every_deployment_with_its_schedule_and_limits(prefect_server: PrefectServer) -> None:
    prefect_server.deploy()
    for name in DEPLOYMENTS:
        deployment = prefect_server.api("GET", f"/deployments/name/synth-augment/{name}")
        assert deployment["enforce_parameter_schema"] is True
        assert deployment["global_concurrency_limit"]["limit"] == 1
        assert deployment["parameters"]["domain"] == name
        (schedule,) = deployment["schedules"]
        assert schedule["schedule"]["cron"].split()[2:] == ["*", "*", "*"] and schedule["schedule"]["timezone"]
        schema = deployment["parameter_openapi_schema"]["properties"]
        assert {"domain", "data", "profile", "budget", "overrides", "runs_root", "task_runner"} <= set(schema)


@pytest.mark.parametrize(("param", "value"), [("profile", "tpu"), ("dask_workers", '"many"'),
                                              ("task_runner", "spark"), ("overrides", "[1, 2]"),
                                              ("dask_workers", "0")])
def test_server_rejects_a_bad_parameter_naming_it(prefect_server: PrefectServer, param: str, value: str) -> None:
    prefect_server.deploy()
    result = prefect_server.cli("deployment", "run", "synth-augment/brain-mri", "--param", f"{param}={value}",
                                check=False, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "UUID" not in output  # no flow run was created
    assert param in output, output
