"""Telling dispatcher processes that a job waits for its flow run, so they need not poll for it.

On PostgreSQL a queued job sends a NOTIFY inside the transaction that records it, so it is delivered
only if that transaction commits; `QueuedJobs` LISTENs for it. The payload is the job table's schema:
channels are per database, and listeners of other schemas on the same server ignore it. Other
databases (SQLite, the embedded default) have no such channel, and `QueuedJobs` polls instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType

import psycopg
from sqlalchemy import make_url, text
from sqlalchemy.orm import Session

CHANNEL = "ourvidz_jobs_queued"
LISTEN_FALLBACK_SECONDS = 2.0  # a notification lost while the listener reconnected is found by then
POLL_SECONDS = 0.25  # without notifications, how long a new job may wait for a dispatcher
logger = logging.getLogger(__name__)


def is_postgres(database_url: str) -> bool:
    return make_url(database_url).get_backend_name() == "postgresql"


def announce_queued(session: Session) -> None:
    """Wake the dispatchers once the caller's transaction commits (PostgreSQL; elsewhere a no-op)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_notify(:channel, current_schema())"), {"channel": CHANNEL})


class QueuedJobs:
    """Waits until a job may be waiting: a notification on PostgreSQL, else the next poll."""

    def __init__(self, database_url: str) -> None:
        self._conninfo = (
            make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
            if is_postgres(database_url)
            else None
        )
        self._conn: psycopg.AsyncConnection | None = None
        self._schema: str | None = None

    @property
    def interval(self) -> float:
        return POLL_SECONDS if self._conninfo is None else LISTEN_FALLBACK_SECONDS

    async def __aenter__(self) -> QueuedJobs:
        """Listen from the start, so a job recorded during the first round of dispatch is not missed."""
        if self._conninfo is not None:
            try:
                await self._listening()
            except psycopg.Error as exc:
                logger.warning("listening for queued jobs failed, polling meanwhile: %s", exc)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._close()

    async def wait(self) -> bool:
        """True when woken by a notification (and drains the others already there); False on timeout."""
        if self._conninfo is None:
            await asyncio.sleep(self.interval)
            return False
        try:
            conn = await self._listening()
            loop = asyncio.get_running_loop()
            deadline, woken = loop.time() + self.interval, False
            while not woken and (left := deadline - loop.time()) > 0:
                async for note in conn.notifies(timeout=left, stop_after=1):
                    woken = note.payload == self._schema
            if woken:  # a burst of jobs sent many; one round of dispatch serves them all
                async for _ in conn.notifies(timeout=0):
                    pass
            return woken
        except psycopg.Error as exc:  # the database went away: poll until it is back
            logger.warning("listening for queued jobs failed, polling meanwhile: %s", exc)
            await self._close()
            await asyncio.sleep(self.interval)
            return False

    async def _listening(self) -> psycopg.AsyncConnection:
        if self._conn is None:
            assert self._conninfo is not None
            conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
            self._schema = (await (await conn.execute("SELECT current_schema()")).fetchone() or [None])[0]
            await conn.execute(f"LISTEN {CHANNEL}")
            self._conn = conn
        return self._conn

    async def _close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(psycopg.Error):
                await conn.close()
