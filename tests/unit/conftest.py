"""The unit tier: no service needed. The job database is SQLite, migrated once per session, and each
test works in a transaction that is rolled back after it (`sessions`); the PostgreSQL variant of a
database test (mark `postgres`) does the same on a schema of its own.

A test whose code must see several connections at once (races, row locks, notifications, migrations)
takes `database_url` instead: a fresh, empty database of its own, SQLite or PostgreSQL.

There is no Prefect server here either: the job events the code emits go to Prefect's own in-memory
events client (`AssertingEventsClient`), where `emitted` reads them. The gateway and end-to-end tiers
receive them from a real server.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from prefect.events.clients import AssertingEventsClient
from prefect.events.worker import EventsWorker
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.db import migrate
from ourvidz.db.session import make_engine
from ourvidz.jobs.create import ensure_profile
from tests.conftest import private_schema
from tests.peers import Receiver

POSTGRES = pytest.param("postgresql", marks=pytest.mark.postgres, id="postgresql")
Emitted = Callable[[uuid.UUID], list[str]]


NO_PREFECT = "http://127.0.0.1:9/api"  # nothing listens there: code that would call Prefect fails at once


@pytest.fixture(scope="package", autouse=True)
def events_in_memory() -> Iterator[None]:
    """Events to the in-memory client; an API URL that answers nothing, so that no test starts
    Prefect's ephemeral server (which the events worker's own client would otherwise do)."""
    EventsWorker.set_client_override(AssertingEventsClient)
    with temporary_settings(updates={PREFECT_API_URL: NO_PREFECT}):
        yield
        EventsWorker.drain_all()
    EventsWorker.set_client_override(None)


@pytest.fixture
def emitted() -> Emitted:
    """The names of the `ourvidz.job.*` events emitted so far about a job, in order."""

    def names(job_id: uuid.UUID) -> list[str]:
        EventsWorker.instance().drain()
        events = [event for client in AssertingEventsClient.all for event in client.events]
        return [e.event for e in events if e.resource.id == f"ourvidz.job.{job_id}"]

    return names


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on loopback that accepts everything."""
    receiver = Receiver()
    yield receiver
    receiver.close()


def _savepoints_on_sqlite(engine: sa.Engine) -> None:
    """pysqlite begins transactions itself and breaks SAVEPOINT; let SQLAlchemy emit BEGIN instead."""

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN")


@pytest.fixture(scope="session")
def sqlite_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sa.Engine]:
    url = f"sqlite:///{tmp_path_factory.mktemp('unit') / 'jobs.db'}"
    migrate.upgrade(url)
    engine = make_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
    _savepoints_on_sqlite(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def postgresql_engine(postgres_admin: sa.Engine) -> Iterator[sa.Engine]:
    with private_schema(postgres_admin, "unit") as url:
        migrate.upgrade(url)
        engine = make_engine(url)
        yield engine
        engine.dispose()


@pytest.fixture(params=["sqlite", POSTGRES])
def sessions(request: pytest.FixtureRequest) -> Iterator[sessionmaker[Session]]:
    """Sessions inside one transaction that is rolled back after the test: every commit of the code
    under test becomes a savepoint of it."""
    engine: sa.Engine = request.getfixturevalue(f"{request.param}_engine")
    with engine.connect() as connection:
        outer = connection.begin()
        try:
            yield sessionmaker(
                bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
            )
        finally:
            outer.rollback()


@pytest.fixture
def user(sessions: sessionmaker[Session]) -> uuid.UUID:
    """A user with a profile, in the test's database."""
    user_id = uuid.uuid4()
    ensure_profile(sessions, user_id)
    return user_id


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture(params=["sqlite", POSTGRES])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of the test's own, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
        return
    with private_schema(request.getfixturevalue("postgres_admin")) as url:
        yield url


@pytest.fixture
def migrated_url(database_url: str) -> str:
    migrate.upgrade(database_url)
    return database_url
