"""The README's "Run it as a service" block works as written on the shipped Prefect.

b64a618's block used `prefect work-pool create ... --concurrency-limit 1`, which Prefect 3.9.1 refuses,
so the pool was never made and `prefect deploy --all` then deployed nothing. The fast test checks that
every command of the block exists and takes every option it is given (at `--help` level, seconds); the
slow test runs the block verbatim in bash against a loopback server (the demo deployment, smoke budget).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PREFECT = [sys.executable, "-m", "prefect"]


def service_block() -> str:
    """The first ```sh block under the README's "Run it as a service" heading."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Run it as a service", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "the service section has no ```sh block"
    return match.group(1)


def commands(block: str) -> list[list[str]]:
    """Each line as argv (comments and a trailing & dropped)."""
    out = []
    for line in block.splitlines():
        argv = shlex.split(line, comments=True)
        if argv and argv[-1] == "&":
            argv = argv[:-1]
        if argv:
            out.append(argv)
    return out


def test_the_readme_block_is_valid_bash_and_every_prefect_command_takes_its_options(tmp_path: Path) -> None:
    block = service_block()
    assert subprocess.run(["bash", "-n"], input=block, text=True).returncode == 0
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
           "PREFECT_HOME": str(tmp_path), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    checked = 0
    for argv in commands(block):
        if argv[0] != "prefect":
            continue
        words = [a for a in argv[1:] if a != "--no-prompt"]
        chain = []
        for word in words:
            if word.startswith("-"):
                break
            chain.append(word)
        shown = subprocess.run([*PREFECT, *chain, "--help"], capture_output=True, text=True, env=env, timeout=120)
        assert shown.returncode == 0, f"{' '.join(argv)}: {shown.stderr[-500:]}"
        for option in (w.split("=", 1)[0] for w in words if w.startswith("--")):
            assert option in shown.stdout, f"`{' '.join(argv)}`: prefect {' '.join(chain)} has no {option}"
        checked += 1
    assert checked >= 5


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_readme_block_runs_verbatim_against_a_loopback_server(tmp_path: Path) -> None:
    if not _port_free(4200):
        pytest.skip("127.0.0.1:4200 is in use: the README's block starts its server there")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
           "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_WORKER_QUERY_SECONDS": "1",
           "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    script = "set -e\n" + service_block()
    process = subprocess.Popen(["bash", "-c", script], cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=1500)
    finally:
        try:
            os.killpg(process.pid, signal.SIGINT)  # the server and the worker it started (a worker ignores TERM)
        except ProcessLookupError:
            pass
    assert process.returncode == 0, output[-4000:]
    assert re.search(r"Flow run '.*' finished in state Completed", output) or "Completed" in output, output[-4000:]
