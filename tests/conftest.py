"""What every tier shares: isolated settings, and PostgreSQL where a test asks for it.

Tiers: `tests/unit` needs no service (SQLite; the same tests on PostgreSQL carry the `postgres`
mark), `tests/gateway` runs the gateway in process against a real Prefect server, `tests/e2e` runs
the stack as processes on PostgreSQL and Redis. A test that needs PostgreSQL fails when it is not
reachable (it never skips); each PostgreSQL test works in a schema of its own, so parallel runs on
one server never see each other.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from ourvidz.db.session import make_engine

POSTGRES_URL = os.environ.get(
    "OURVIDZ_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's OURVIDZ_* variables or writes into the checkout."""
    for name in list(os.environ):
        if name.startswith("OURVIDZ_") and name != "OURVIDZ_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("OURVIDZ_DATA_DIR", str(tmp_path_factory.mktemp("data")))


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[sa.Engine]:
    engine = make_engine(POSTGRES_URL)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {POSTGRES_URL} is required by this test and is unreachable: {exc}")
    yield engine
    engine.dispose()


@contextmanager
def private_schema(admin: sa.Engine, prefix: str = "t") -> Iterator[str]:
    """A URL whose connections live in a fresh PostgreSQL schema, dropped afterwards."""
    schema = f"{prefix}_{uuid.uuid4().hex[:16]}"
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny causal LM with random weights and a word-level tokenizer, saved like a real model folder."""
    from tests.tiny_llm import build_tiny_llm

    return build_tiny_llm(tmp_path_factory.mktemp("tiny_llm"))
