"""Helpers for the flow tests. The services the tests start themselves: a Prefect server (SQLite or
PostgreSQL), a work pool, the deployments from prefect.yaml and a process worker, all stopped by pid.

conftest.py holds the fixtures: one SQLite server per test session serves every test (the in-process
flow runs talk to it too); the PostgreSQL server starts only for the test that needs it. PostgreSQL comes from
``SYNTH_AUGMENT_TEST_POSTGRES_URL`` (.ci/run starts Debian's cluster and exports it) or, when that
is unset, from a throwaway cluster this file starts with the local ``initdb``/``pg_ctl``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
POOL = "synth-augment"
POSTGRES_ENV = "SYNTH_AUGMENT_TEST_POSTGRES_URL"
SERVER_START_TIMEOUT_S = 120

def _smoke_overrides() -> dict:
    """The smoke budget (flows/configs/budgets/smoke.yaml) as overrides, two arms only (in-process tests)."""
    from pipeline.config import configs_dir, read_yaml

    overrides = read_yaml(configs_dir() / "budgets" / "smoke.yaml")["overrides"]
    overrides["classifiers"]["arms"] = ["synthetic", "real"]
    return overrides


TINY = _smoke_overrides()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PrefectServer:
    """A running `prefect server start` and the environment that talks to it."""

    url: str  # .../api
    env: dict[str, str]
    home: Path
    log: Path
    process: subprocess.Popen
    workers: list[subprocess.Popen] = field(default_factory=list)
    deployed: bool = False

    def cli(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
        """Run the prefect CLI against this server (from the repository root, where prefect.yaml is)."""
        result = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", *args], cwd=REPO, env=self.env,
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"prefect {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n"
                                 f"{result.stderr}")
        return result

    def api(self, method: str, path: str, body: dict | None = None) -> object:
        request = urllib.request.Request(self.url + path, method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def deploy(self) -> None:
        """Create the process pool, deploy every deployment of prefect.yaml, start one worker (once)."""
        if self.deployed:
            return
        self.cli("work-pool", "create", POOL, "--type", "process", "--overwrite")
        self.cli("deploy", "--all")
        log = open(self.home / "worker.log", "w")  # noqa: SIM115 - closed with the process
        self.workers.append(subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--type", "process"],
            cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        self.deployed = True

    def stop(self) -> None:
        for process in [*self.workers, self.process]:
            stop_process(process)


def stop_process(process: subprocess.Popen, grace_s: float = 20) -> None:
    """SIGTERM the process group this test started (its pid), SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def start_server(home: Path, database_url: str | None = None) -> PrefectServer:
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({
        "PREFECT_HOME": str(home), "PREFECT_API_URL": url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "1",
        "PREFECT_SERVER_UI_ENABLED": "false", "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "INFO",
        "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1",
        # the flow-run processes import this checkout's code, whatever the venv's editable install points at
        "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "PWD": str(REPO),
    })
    if database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    log = home / "server.log"
    with open(log, "w") as handle:
        process = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                    "--port", str(port)], cwd=home, env=env, stdout=handle,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    server = PrefectServer(url, env, home, log, process)
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"prefect server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        with contextlib.suppress(OSError):
            if server.api("GET", "/health") is True:
                return server
        time.sleep(0.5)
    server.stop()
    raise AssertionError(f"prefect server not healthy after {SERVER_START_TIMEOUT_S}s:\n{log.read_text()[-4000:]}")


# ----------------------------------------------------------------------------------------------
# PostgreSQL


def _postgres_bin() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    found = shutil.which("initdb")
    return Path(found).parent if found and shutil.which("pg_ctl") else None


@contextlib.contextmanager
def throwaway_postgres(base: Path) -> Iterator[str]:
    """initdb + pg_ctl on a free loopback port (as the postgres user when running as root)."""
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip(f"PostgreSQL not available: set {POSTGRES_ENV} to a postgresql+asyncpg:// URL or install "
                    f"Debian's postgresql (initdb/pg_ctl not found)")
    as_user: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("PostgreSQL refuses to run as root and runuser is missing")
        as_user = ["runuser", "-u", "postgres", "--"]
    data = base / "pgdata"
    base.mkdir(parents=True, exist_ok=True)
    if as_user:
        shutil.chown(base, "postgres")
        base.chmod(0o755)
        for parent in base.parents:  # the postgres user must be able to reach its data directory
            if parent == Path("/"):
                break
            parent.chmod(parent.stat().st_mode | 0o011)
    port = free_port()
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "prefect", "--auth=trust",
                    "-E", "UTF8"], check=True, capture_output=True)
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "pg.log"), "-w", "-o",
                    f"-p {port} -h 127.0.0.1 -k {base}", "start"], check=True, capture_output=True)
    try:
        subprocess.run([*as_user, str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "prefect",
                        "prefect"], check=True, capture_output=True)
        yield f"postgresql+asyncpg://prefect@127.0.0.1:{port}/prefect"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True)
