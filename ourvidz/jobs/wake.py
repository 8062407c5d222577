"""Waking the dispatcher when a job starts waiting for its flow run (recorded, or re-queued by recovery).

A dispatcher in the same process (the gateway's) is woken when the transaction that queued the job
commits. Across processes, on PostgreSQL, that transaction also sends a NOTIFY, delivered only if it
commits; `QueuedJobs` LISTENs for it. The payload is the job table's schema: channels are per
database, and listeners of other schemas on the same server ignore it. Other databases (SQLite, the
embedded default) have no such channel, and `QueuedJobs` polls as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from types import TracebackType

import psycopg
from sqlalchemy import event, make_url, text
from sqlalchemy.orm import Session

CHANNEL = "ourvidz_jobs_queued"
LISTEN_FALLBACK_SECONDS = 2.0  # a notification lost while the listener reconnected is found by then
LISTEN_CHECK_SECONDS = 3.0  # how often a quiet LISTEN connection is checked
POLL_SECONDS = 0.25  # without notifications, how long a job queued by another process may wait
logger = logging.getLogger(__name__)

_local: set[QueuedJobs] = set()  # the listeners of this process
_local_lock = threading.Lock()


def is_postgres(database_url: str) -> bool:
    return make_url(database_url).get_backend_name() == "postgresql"


def wake_dispatchers(session: Session) -> None:
    """Wake every dispatcher once the caller's transaction commits (never on a rollback)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_notify(:channel, current_schema())"), {"channel": CHANNEL})
    with _local_lock:
        listening = bool(_local)
    if listening:
        event.listen(session, "after_commit", _wake_local, once=True)


def _wake_local(_session: Session) -> None:
    with _local_lock:
        listeners = list(_local)
    for listener in listeners:
        listener.wake()


class QueuedJobs:
    """Waits until a job may be waiting: a wake-up from this process, a notification on PostgreSQL
    (read by a background task), or the next poll."""

    def __init__(self, database_url: str) -> None:
        self._conninfo = (
            make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
            if is_postgres(database_url)
            else None
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._woken = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()  # set while notifications can arrive
        self.backend_pid: int | None = None  # the listening connection's server process

    @property
    def interval(self) -> float:
        return POLL_SECONDS if self._conninfo is None else LISTEN_FALLBACK_SECONDS

    async def __aenter__(self) -> QueuedJobs:
        """Listen from the start, so a job recorded during the first round of dispatch is not missed."""
        self._loop = asyncio.get_running_loop()
        with _local_lock:
            _local.add(self)
        if self._conninfo is not None:
            self._listener = asyncio.create_task(self._listen(self._conninfo))
            with contextlib.suppress(TimeoutError):  # the database may be away: poll meanwhile
                await asyncio.wait_for(self.listening.wait(), 5)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with _local_lock:
            _local.discard(self)
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)

    def wake(self) -> None:
        """From any thread: the next `wait` returns at once."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._woken.set)

    async def wait(self) -> bool:
        """True when woken (every wake-up until now is taken with it); False after the poll interval."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._woken.wait(), self.interval)
        woken = self._woken.is_set()
        self._woken.clear()
        return woken

    async def _listen(self, conninfo: str) -> None:
        """LISTEN for as long as the dispatcher runs, reconnecting when the database comes back. The
        connection is checked every LISTEN_CHECK_SECONDS (a server restart or a network cut that sends
        no reset would otherwise leave it waiting for notifications that never come)."""
        cut = False
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    conninfo, autocommit=True, connect_timeout=int(LISTEN_CHECK_SECONDS),
                    application_name="ourvidz-dispatcher",
                )  # fmt: skip
                async with conn:
                    schema = (await (await conn.execute("SELECT current_schema()")).fetchone() or [None])[0]
                    await conn.execute(f"LISTEN {CHANNEL}")
                    if cut:  # a job queued while it was away is found now
                        self._woken.set()
                    self.backend_pid = conn.info.backend_pid
                    self.listening.set()
                    while True:
                        async for note in conn.notifies(timeout=LISTEN_CHECK_SECONDS):
                            if note.payload == schema:
                                self._woken.set()
                        await asyncio.wait_for(conn.execute("SELECT 1"), LISTEN_CHECK_SECONDS)
            except (psycopg.Error, OSError, TimeoutError) as exc:
                logger.warning("listening for queued jobs failed, polling meanwhile: %s", exc)
            self.listening.clear()
            self.backend_pid, cut = None, True
            await asyncio.sleep(LISTEN_FALLBACK_SECONDS)
