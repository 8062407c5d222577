"""Registered HTTP workers, one `workers` row each, with their latest probe.

A worker registers itself (service key) or an admin sets its URL; a Prefect worker with a status
endpoint registers that endpoint when it starts and removes it when it stops. Readers that need a
worker's health probe it (`ourvidz.registry.probes`) and record the result here, so a worker found
unhealthy is passed over for a while instead of costing every caller a timeout.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.db.models import Worker
from ourvidz.db.types import utcnow
from ourvidz.egress import EgressPolicy
from ourvidz.prompts.chat import PROTOCOLS, ChatWorker, Protocol
from ourvidz.registry.probes import Probe

CHAT = "chat"
STATUS_ENDPOINT = "prefect-worker"  # a Prefect worker's own `GET /health`, named `<pool>:<worker name>`
SELF_REGISTRATION = "register-chat-worker"
UNHEALTHY_SKIP_SECONDS = 60.0  # how long a worker found unhealthy is passed over without asking it


@dataclass(frozen=True, slots=True)
class Registration:
    """A registered worker, detached from its session."""

    kind: str
    name: str
    url: str
    protocol: Protocol
    capabilities: list[Any]
    max_concurrent: int | None
    pool: str | None
    queues: list[Any]
    registration_method: str
    registered_at: datetime
    updated_at: datetime
    probe_status: str | None
    probe_response_ms: float | None
    probe_error: str | None
    probed_at: datetime | None

    @classmethod
    def of(cls, row: Worker) -> Registration:
        protocol: Protocol = row.protocol if row.protocol in PROTOCOLS else "openai"  # type: ignore[assignment]
        return cls(
            row.kind, row.name, row.url, protocol, list(row.capabilities or []), row.max_concurrent, row.pool,
            list(row.queues or []), row.registration_method, row.registered_at, row.updated_at,
            row.probe_status, row.probe_response_ms, row.probe_error, row.probed_at,
        )  # fmt: skip

    def info(self) -> dict[str, Any]:
        """The spec's `registrationInfo`."""
        auto = self.registration_method == SELF_REGISTRATION
        return {
            "autoRegistered": auto, "registrationMethod": self.registration_method,
            "detectionMethod": "self-registration" if auto else "manual",
            "lastUpdated": self.registered_at.isoformat(),
            "lastRegistrationAttempt": self.updated_at.isoformat(),
        }  # fmt: skip

    def details(self) -> dict[str, Any]:
        """What a registration endpoint answers about the stored worker."""
        details: dict[str, Any] = {"url": self.url, "registrationInfo": self.info()}
        if self.kind == CHAT:
            details |= {"capabilities": self.capabilities, "maxConcurrentChats": self.max_concurrent or 1,
                        "protocol": self.protocol}  # fmt: skip
        if self.pool:
            details |= {"pool": self.pool, "queues": self.queues}
        return details


def register(
    sessions: sessionmaker[Session],
    kind: str,
    url: str,
    method: str,
    *,
    name: str = "",
    protocol: str | None = None,
    capabilities: Sequence[Any] = (),
    max_concurrent: int | None = None,
    pool: str | None = None,
    queues: Sequence[str] = (),
) -> Registration:
    """Store (or replace) the worker of `kind` and `name`; a new URL starts without probe results."""
    url = url.rstrip("/")
    fields = {
        "url": url, "protocol": protocol, "capabilities": list(capabilities),
        "max_concurrent": max_concurrent, "pool": pool, "queues": list(queues), "registration_method": method,
    }  # fmt: skip
    for _ in range(2):  # two first registrations at once: the second updates the first's row
        try:
            with sessions.begin() as session:
                row = _row(session, kind, name, lock=True)
                now = utcnow()
                if row is None:
                    row = Worker(id=uuid.uuid4(), kind=kind, name=name, registered_at=now, **fields)
                    session.add(row)
                else:
                    if row.url != url:
                        _clear_probe(row)
                    for field, value in fields.items():
                        setattr(row, field, value)
                    row.registered_at = now
                row.updated_at = now
                session.flush()
                return Registration.of(row)
        except IntegrityError:
            continue
    raise RuntimeError(f"could not register worker {kind}:{name}")


def forget(sessions: sessionmaker[Session], kind: str, name: str = "", url: str | None = None) -> None:
    """Remove the registration; with `url`, only while the worker is still registered at it (a worker
    that re-registered elsewhere in the meantime keeps its new registration)."""
    with sessions.begin() as session:
        row = _row(session, kind, name, lock=True)
        if row is not None and (url is None or row.url == url.rstrip("/")):
            session.delete(row)


def registration(sessions: sessionmaker[Session], kind: str, name: str = "") -> Registration | None:
    with sessions() as session:
        row = _row(session, kind, name)
        return None if row is None else Registration.of(row)


def registrations(sessions: sessionmaker[Session]) -> list[Registration]:
    with sessions() as session:
        return [
            Registration.of(row) for row in session.scalars(select(Worker).order_by(Worker.kind, Worker.name))
        ]


def registered_chat_worker(sessions: sessionmaker[Session], egress: EgressPolicy) -> ChatWorker | None:
    """The registered chat worker, called through `egress` (the worker URL policy), unless a probe
    found it unhealthy within UNHEALTHY_SKIP_SECONDS (then callers go straight to their fallback
    instead of waiting on it; after that it is tried again). Not probed here: callers fall back when
    it fails."""
    worker = registration(sessions, CHAT)
    if worker is None or _recently_unhealthy(worker):
        return None
    return ChatWorker(worker.url, worker.protocol, egress)


def _recently_unhealthy(worker: Registration) -> bool:
    if worker.probe_status != "unhealthy" or worker.probed_at is None:
        return False
    return (utcnow() - worker.probed_at).total_seconds() < UNHEALTHY_SKIP_SECONDS


def record_probe(
    sessions: sessionmaker[Session], kind: str, name: str, url: str, result: Probe
) -> float | None:
    """Keep a probe's result with the worker's registration (if it is still registered at `url`).

    Returns for how many seconds the worker has failed every probe (0 on its first failure), None
    when it is healthy or no longer registered at `url`.
    """
    now = utcnow()
    with sessions.begin() as session:
        row = _row(session, kind, name, lock=True)
        if row is None or row.url != url.rstrip("/"):
            return None
        row.probe_status = "healthy" if result.healthy else "unhealthy"
        row.probe_response_ms = round(result.seconds * 1000, 1)
        row.probe_error = result.error
        row.probed_at = now
        if result.healthy:
            row.unhealthy_since = None
            return None
        row.unhealthy_since = row.unhealthy_since or now
        return (now - row.unhealthy_since).total_seconds()


def _row(session: Session, kind: str, name: str, lock: bool = False) -> Worker | None:
    query = select(Worker).where(Worker.kind == kind, Worker.name == name)
    return session.scalar(query.with_for_update() if lock else query)


def _clear_probe(row: Worker) -> None:
    row.probe_status = row.probe_response_ms = row.probe_error = None
    row.probed_at = row.unhealthy_since = None
