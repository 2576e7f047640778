"""Fixtures of the flow tests: a Prefect server per session (SQLite) and one on PostgreSQL (see flow_helpers)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from flow_helpers import POSTGRES_ENV, PrefectServer, start_server, throwaway_postgres


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A Prefect server on SQLite, on a free loopback port, with a temporary PREFECT_HOME."""
    server = start_server(tmp_path_factory.mktemp("prefect-sqlite"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def prefect_api(prefect_server: PrefectServer) -> Iterator[PrefectServer]:
    """In-process flow runs in this test report to the session's server (not an ephemeral one)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_server.url, PREFECT_HOME: str(prefect_server.home)}):
        yield prefect_server


@pytest.fixture(scope="module")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A Prefect server whose database is PostgreSQL (the production setting)."""
    base = tmp_path_factory.mktemp("prefect-postgres")
    with contextlib.ExitStack() as stack:
        url = os.environ.get(POSTGRES_ENV) or stack.enter_context(throwaway_postgres(base / "pg"))
        server = start_server(base / "home", database_url=url)
        stack.callback(server.stop)
        yield server
