"""GPU worker leases: each worker process renews its lease every few seconds with the flow runs it
holds; a lease that expired names the runs of a process that died (kill -9, a lost machine), so
recovery acts within seconds instead of waiting for Prefect's flow-run heartbeats (30 s at the least,
two missed before a run is marked Crashed).

A worker that stops cleanly gives its lease up. A worker that only lost the job database for longer
than its lease is taken for dead too: its runs are crashed and their jobs re-queued, and when it comes
back it finds its runs taken and stops them (its late results are refused, the job is another run's).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.db.models import WorkerLease
from ourvidz.db.types import utcnow


@dataclass(frozen=True, slots=True)
class Lease:
    """One worker process's lease, detached from its session."""

    id: uuid.UUID
    worker: str
    pool: str
    host: str
    pid: int
    runs: tuple[uuid.UUID, ...]
    renewed_at: datetime
    expires_at: datetime

    @classmethod
    def of(cls, row: WorkerLease) -> Lease:
        runs = tuple(uuid.UUID(str(run)) for run in row.runs or [])
        return cls(row.id, row.worker, row.pool, row.host, row.pid, runs, row.renewed_at, row.expires_at)


def renew(
    sessions: sessionmaker[Session],
    lease_id: uuid.UUID,
    *,
    worker: str,
    pool: str,
    runs: Iterable[uuid.UUID],
    seconds: float,
) -> None:
    """Write this process's lease: valid for `seconds` from now, holding `runs`."""
    now = utcnow()
    with sessions.begin() as session:
        row = session.get(WorkerLease, lease_id)
        if row is None:
            row = WorkerLease(
                id=lease_id, worker=worker, pool=pool, host=socket.gethostname(), pid=os.getpid()
            )
            session.add(row)
        row.runs = sorted(str(run) for run in runs)
        row.renewed_at, row.expires_at = now, now + timedelta(seconds=seconds)


def give_up(sessions: sessionmaker[Session], lease_id: uuid.UUID) -> None:
    """A worker that stops cleanly: its runs ended or were handed back, nothing to recover."""
    with sessions.begin() as session:
        session.execute(delete(WorkerLease).where(WorkerLease.id == lease_id))


def leases(sessions: sessionmaker[Session]) -> list[Lease]:
    with sessions() as session:
        return [Lease.of(row) for row in session.scalars(select(WorkerLease).order_by(WorkerLease.worker))]


def take_expired(sessions: sessionmaker[Session], now: datetime | None = None) -> list[Lease]:
    """Remove the leases that expired and return them: each is taken by one caller only (rows locked
    and skipped where the database has row locks), who then recovers its runs."""
    now = now or utcnow()
    query = select(WorkerLease).where(WorkerLease.expires_at < now).with_for_update(skip_locked=True)
    with sessions.begin() as session:
        taken = [Lease.of(row) for row in session.scalars(query)]
        if taken:
            session.execute(delete(WorkerLease).where(WorkerLease.id.in_([lease.id for lease in taken])))
    return taken
