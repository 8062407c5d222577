"""Outgoing job webhooks, signed per Standard Webhooks, each attempt recorded in webhook_deliveries.

The webhook id stays the same across retries so a receiver can drop duplicates; the signature
covers id, timestamp and body, so a receiver can reject replays and tampering.

Delivery outlives a receiver outage, and a receiver never holds a GPU flow run: the job's final move
queues its webhook (`enqueue`: row `attempt` 0, in the same transaction), the process that ended the
job makes the first attempt on a background thread (plus `QUICK_RETRY_SECONDS` of quick retries,
`first_attempt`), and the `deliver-webhooks` maintenance flow makes the later ones when they come due.
The schedule is read from the rows alone (no state elsewhere): a webhook queued `QUEUED_GRACE` ago
without an attempt (its process died first) is due; after the n-th failed attempt the next one is due
`backoff(n)` later; none is scheduled at or after `DEADLINE` from the job's end. A webhook id with a
succeeded attempt is never sent again, except when an admin asks for it (`redeliver`).

A `WebhookSender` signs and sends: it connects only where the egress policy allows (a job's URL was
checked when it was accepted, and is checked again at each attempt), follows no redirect, and keeps only
the first `MAX_RESPONSE_BYTES` of an answer.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple

import httpx
from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks.webhooks import Webhook

from ourvidz.config import Settings
from ourvidz.db.models import WebhookDelivery
from ourvidz.egress import EgressPolicy, EgressRefused, policies

TIMEOUT_SECONDS = 10.0
MAX_RESPONSE_BYTES = 256  # what an attempt keeps of the receiver's answer: enough to say why it refused

QUICK_RETRY_SECONDS = (0.5, 1.5)  # after a refused first attempt: ~2 s at most
QUEUED_GRACE = timedelta(seconds=60)  # a queued webhook still without an attempt is sent by deliver-webhooks
FIRST_BACKOFF = timedelta(seconds=5)  # then 10, 20, 40, 80, 160 s, ...
MAX_BACKOFF = timedelta(minutes=5)  # ... capped here
DEADLINE = timedelta(hours=1)  # no automatic attempt is scheduled later than this after the first
RUN_BUDGET_SECONDS = 25.0  # one deliver-webhooks run starts no attempt after this (runs every 30 s)
RECORD_TRIES = 3


class WebhookFailed(RuntimeError):
    """The receiver did not answer 2xx; the attempt is recorded and the delivery stays pending."""

    def __init__(self, message: str, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class DeliveryStatus(StrEnum):
    SUCCEEDED = "succeeded"  # an attempt got a 2xx
    PENDING = "pending"  # no 2xx yet, another automatic attempt is scheduled before the deadline
    FAILED = "failed"  # no 2xx and no automatic attempt left (an admin may still redeliver)


def backoff(attempts: int) -> timedelta:
    """How long after the `attempts`-th failed attempt the next one is due: doubling, capped."""
    return min(FIRST_BACKOFF * 2 ** min(max(attempts - 1, 0), 30), MAX_BACKOFF)


@dataclass(frozen=True)
class Delivery:
    """One webhook id, summarised from its attempt rows; its schedule follows from these alone."""

    webhook_id: str
    job_id: uuid.UUID | None
    event_type: str
    attempts: int
    first_at: datetime
    last_at: datetime
    succeeded: bool

    @property
    def next_attempt_at(self) -> datetime | None:
        """When the next automatic attempt is due; None once succeeded or past the deadline."""
        if self.succeeded:
            return None
        due = self.last_at + (QUEUED_GRACE if self.attempts == 0 else backoff(self.attempts))
        return due if due < self.first_at + DEADLINE else None

    def status(self, now: datetime) -> DeliveryStatus:
        if self.succeeded:
            return DeliveryStatus.SUCCEEDED
        pending = self.next_attempt_at is not None and now < self.first_at + DEADLINE
        return DeliveryStatus.PENDING if pending else DeliveryStatus.FAILED

    def is_due(self, now: datetime) -> bool:
        due = self.next_attempt_at
        return due is not None and due <= now < self.first_at + DEADLINE


@dataclass(frozen=True)
class Attempt:
    """One recorded attempt, detached from its session."""

    id: uuid.UUID
    webhook_id: str
    job_id: uuid.UUID | None
    url: str
    event_type: str
    attempt: int
    status_code: int | None
    error: str | None
    response_body: str | None
    succeeded: bool
    created_at: datetime

    @classmethod
    def of(cls, row: WebhookDelivery) -> Attempt:
        return cls(
            id=row.id, webhook_id=row.webhook_id, job_id=row.job_id, url=row.url, event_type=row.event_type,
            attempt=row.attempt, status_code=row.status_code, error=row.error,
            response_body=row.response_body, succeeded=row.succeeded, created_at=row.created_at,
        )  # fmt: skip


class History(NamedTuple):
    delivery: Delivery
    attempts: list[Attempt]  # oldest first (the queued row is not an attempt)
    payload: dict[str, Any]
    url: str


@dataclass
class DueReport:
    """What one `deliver_due` pass did; `pending` counts every delivery still pending after it."""

    delivered: int = 0
    pending: int = 0
    given_up: int = 0
    skipped: int = 0  # taken by another run, or no longer due when re-checked
    left_for_next_run: int = 0  # due, but the run's time budget was spent
    attempts: list[Attempt] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {name: value for name, value in asdict(self).items() if name != "attempts"}


@dataclass(frozen=True)
class _Target:
    webhook_id: str
    job_id: uuid.UUID | None
    url: str
    event_type: str
    payload: dict[str, Any]


class _Outcome(NamedTuple):
    status: int | None
    response: str | None
    error: str | None
    timed_out: bool

    @property
    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True)
class WebhookSender:
    """Signs with the process's webhook secret and sends where `egress` allows."""

    secret: str
    egress: EgressPolicy = field(default_factory=EgressPolicy)

    @classmethod
    def of(cls, settings: Settings, egress: EgressPolicy | None = None) -> WebhookSender | None:
        """This process's sender (None without a webhook secret); `egress`: its user-URL policy, when
        the caller has it already."""
        if settings.webhook_secret is None:
            return None
        return cls(settings.webhook_secret.get_secret_value(), egress or policies(settings)[0])

    @functools.cached_property
    def client(self) -> httpx.Client:
        """One pooled client per sender: no SSL context built on every attempt."""
        return self.egress.client(timeout=TIMEOUT_SECONDS)


def webhook_id_for(job_id: uuid.UUID, event_type: str) -> str:
    """Stable per job and event, so every retry carries the same id."""
    return f"msg_{uuid.uuid5(job_id, event_type).hex}"


def signed_request(secret: str, webhook_id: str, payload: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """Body and headers of one attempt; each attempt gets a fresh timestamp, hence a fresh signature."""
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True)
    now = datetime.now(UTC)
    headers = {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(webhook_id, now, body),
    }
    return body, headers


def enqueue(
    session: Session, *, url: str, job_id: uuid.UUID, event_type: str, payload: dict[str, Any]
) -> None:
    """Queue a job event's webhook in the caller's transaction (the job's final move): `attempt` 0, so
    deliver-webhooks sends it if no attempt follows within QUEUED_GRACE."""
    session.add(WebhookDelivery(
        webhook_id=webhook_id_for(job_id, event_type), job_id=job_id, url=url, event_type=event_type,
        payload=payload, attempt=0, succeeded=False,
    ))  # fmt: skip


def deliver(
    sessions: sessionmaker[Session],
    sender: WebhookSender,
    *,
    url: str,
    job_id: uuid.UUID,
    event_type: str,
    payload: dict[str, Any],
) -> int:
    """POST one attempt and record it; returns the status code, raises `WebhookFailed` unless 2xx."""
    target = _Target(webhook_id_for(job_id, event_type), job_id, url, event_type, payload)
    outcome = _post(sender, target)
    with sessions() as session:
        _record(session, target, outcome)
    if not outcome.succeeded:
        raise WebhookFailed(
            f"webhook to {url} failed: {outcome.error or f'HTTP {outcome.status}'}", outcome.timed_out
        )
    assert outcome.status is not None
    return outcome.status


def first_attempt(
    sessions: sessionmaker[Session],
    sender: WebhookSender,
    *,
    url: str,
    job_id: uuid.UUID,
    event_type: str,
    payload: dict[str, Any],
) -> int:
    """The first attempt, then a quick retry after each of `QUICK_RETRY_SECONDS` while the receiver
    refuses (a timeout is not retried here: it already took `TIMEOUT_SECONDS`); raises the last
    `WebhookFailed`, and the deliver-webhooks flow goes on from there."""
    pauses = iter(QUICK_RETRY_SECONDS)
    while True:
        try:
            return deliver(sessions, sender, url=url, job_id=job_id, event_type=event_type, payload=payload)
        except WebhookFailed as exc:
            pause = next(pauses, None)
            if exc.timed_out or pause is None:
                raise
            time.sleep(pause)


def due_deliveries(sessions: sessionmaker[Session], now: datetime | None = None) -> list[Delivery]:
    """Deliveries whose next automatic attempt is due at `now`, the longest waiting first."""
    now = now or datetime.now(UTC)
    candidates = _unfinished(sessions, now)
    due = [delivery for delivery in candidates if delivery.is_due(now)]
    return sorted(due, key=lambda delivery: delivery.next_attempt_at or now)


def _unfinished(sessions: sessionmaker[Session], now: datetime) -> list[Delivery]:
    """Deliveries without a success whose first attempt is inside the deadline.

    Only webhooks with an attempt inside the deadline window qualify: they are found by the
    created_at index, then aggregated over all their attempts, so the query does not grow with the
    history.
    """
    recent = select(WebhookDelivery.webhook_id).where(WebhookDelivery.created_at > now - DEADLINE)
    with sessions() as session:
        return _summaries(
            session,
            where=[WebhookDelivery.webhook_id.in_(recent)],
            having=[_no_success(), _within_deadline(now)],
        )


def deliver_due(
    sessions: sessionmaker[Session],
    sender: WebhookSender,
    now: datetime | None = None,
    budget_seconds: float = RUN_BUDGET_SECONDS,
) -> DueReport:
    """Redeliver every due delivery, one at a time, each re-checked right before it is sent."""
    started, report = time.monotonic(), DueReport()
    due = due_deliveries(sessions, now)
    for index, delivery in enumerate(due):
        if time.monotonic() - started > budget_seconds:
            report.left_for_next_run = len(due) - index
            break
        attempt = _attempt_if_due(sessions, sender, delivery.webhook_id, now)
        if attempt is None:
            report.skipped += 1
            continue
        report.attempts.append(attempt)
        if attempt.succeeded:
            report.delivered += 1
        elif _load(sessions, delivery.webhook_id).next_attempt_at is None:  # that was the last one
            report.given_up += 1
    report.pending = count_pending(sessions, now)
    return report


def redeliver(sessions: sessionmaker[Session], sender: WebhookSender, webhook_id: str) -> Attempt | None:
    """An admin's explicit new attempt now (also after a success or past the deadline); None if unknown.

    It carries the stored url, event and payload under the same webhook id, with a fresh timestamp and
    signature; it does not restart the automatic schedule.
    """
    with sessions() as session:
        rows = _lock(session, webhook_id, skip_locked=False)
        if not rows:
            return None
        target = _target_of(rows[-1])
        return _record(session, target, _post(sender, target))


def count_pending(sessions: sessionmaker[Session], now: datetime | None = None) -> int:
    """How many deliveries still wait for an automatic attempt."""
    now = now or datetime.now(UTC)
    candidates = _unfinished(sessions, now)
    return sum(delivery.status(now) is DeliveryStatus.PENDING for delivery in candidates)


def list_deliveries(
    sessions: sessionmaker[Session],
    *,
    job_id: uuid.UUID | None = None,
    webhook_id: str | None = None,
    status: DeliveryStatus | None = None,
    limit: int = 50,
    now: datetime | None = None,
) -> list[History]:
    """Deliveries with their attempts, the most recently attempted first, filtered as asked.

    Pending and failed are told apart in Python (the schedule needs date arithmetic that SQLite and
    PostgreSQL spell differently); only deliveries younger than the deadline need it, a bounded set.
    """
    now = now or datetime.now(UTC)
    where = [WebhookDelivery.job_id == job_id] if job_id is not None else []
    if webhook_id is not None:
        where.append(WebhookDelivery.webhook_id == webhook_id)
    with sessions() as session:
        if status is None:
            found = _summaries(session, where=where, limit=limit)
        elif status is DeliveryStatus.SUCCEEDED:
            found = _summaries(session, where=where, having=[~_no_success()], limit=limit)
        else:
            recent = _summaries(session, where=where, having=[_no_success(), _within_deadline(now)])
            found = [delivery for delivery in recent if delivery.status(now) is status]
            if status is DeliveryStatus.FAILED:
                older = [_no_success(), ~_within_deadline(now)]
                found += _summaries(session, where=where, having=older, limit=limit)
        found = sorted(found, key=lambda delivery: delivery.last_at, reverse=True)[:limit]
        return _histories(session, found)


def _post(sender: WebhookSender, target: _Target) -> _Outcome:
    """One attempt; a refusal of the egress policy is recorded like a failed connection (`EgressRefused`)."""
    body, headers = signed_request(sender.secret, target.webhook_id, target.payload)
    try:
        with sender.client.stream("POST", target.url, content=body, headers=headers) as answer:
            return _Outcome(answer.status_code, _excerpt(answer), None, False)
    except EgressRefused as exc:
        return _Outcome(None, None, str(exc), False)
    except httpx.HTTPError as exc:
        return _Outcome(None, None, f"{type(exc).__name__}: {exc}", isinstance(exc, httpx.TimeoutException))


def _excerpt(answer: httpx.Response) -> str:
    """The start of the answer's body, read no further than `MAX_RESPONSE_BYTES`."""
    data = b""
    for chunk in answer.iter_bytes():
        data += chunk
        if len(data) >= MAX_RESPONSE_BYTES:
            break
    return data[:MAX_RESPONSE_BYTES].decode("utf-8", "replace").replace("\x00", "")  # no NUL in a text column


def _record(session: Session, target: _Target, outcome: _Outcome) -> Attempt:
    """Insert the attempt under the next free number; a concurrent attempt that took it moves us on."""
    for _ in range(RECORD_TRIES):
        last = session.scalar(
            select(func.max(WebhookDelivery.attempt)).where(WebhookDelivery.webhook_id == target.webhook_id)
        )
        row = WebhookDelivery(
            webhook_id=target.webhook_id, job_id=target.job_id, url=target.url, event_type=target.event_type,
            payload=target.payload, attempt=(last or 0) + 1, status_code=outcome.status,
            response_body=outcome.response, error=outcome.error, succeeded=outcome.succeeded,
        )  # fmt: skip
        session.add(row)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            continue
        return Attempt.of(row)
    raise RuntimeError(f"could not record an attempt of webhook {target.webhook_id}")


def _attempt_if_due(
    sessions: sessionmaker[Session], sender: WebhookSender, webhook_id: str, now: datetime | None
) -> Attempt | None:
    """Send one due delivery while holding its rows; None if another run holds them or it is not due.

    On PostgreSQL the rows are locked (FOR UPDATE SKIP LOCKED) from the re-check until the attempt is
    recorded, so two runs never send the same webhook at once; SQLite has no row locks.
    """
    with sessions() as session:
        rows = _lock(session, webhook_id, skip_locked=True)
        if not rows or not _summary_of(rows).is_due(now or datetime.now(UTC)):
            return None
        target = _target_of(rows[-1])
        return _record(session, target, _post(sender, target))


def _lock(session: Session, webhook_id: str, *, skip_locked: bool) -> list[WebhookDelivery]:
    query = (
        select(WebhookDelivery)
        .where(WebhookDelivery.webhook_id == webhook_id)
        .order_by(WebhookDelivery.attempt)
        .with_for_update(skip_locked=skip_locked)
    )
    return list(session.scalars(query))


def _load(sessions: sessionmaker[Session], webhook_id: str) -> Delivery:
    with sessions() as session:
        query = select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
        return _summary_of(list(session.scalars(query.order_by(WebhookDelivery.attempt))))


def _target_of(row: WebhookDelivery) -> _Target:
    return _Target(row.webhook_id, row.job_id, row.url, row.event_type, dict(row.payload))


def _summary_of(rows: list[WebhookDelivery]) -> Delivery:
    return Delivery(
        webhook_id=rows[0].webhook_id, job_id=rows[0].job_id, event_type=rows[0].event_type,
        attempts=sum(row.attempt > 0 for row in rows), first_at=min(row.created_at for row in rows),
        last_at=max(row.created_at for row in rows), succeeded=any(row.succeeded for row in rows),
    )  # fmt: skip


def _success_flag() -> ColumnElement[int]:
    return func.max(case((WebhookDelivery.succeeded, 1), else_=0))


def _no_success() -> ColumnElement[bool]:
    return _success_flag() == 0


def _within_deadline(now: datetime) -> ColumnElement[bool]:
    """The first attempt is younger than the deadline (a comparison both databases make alike)."""
    return func.min(WebhookDelivery.created_at) > now - DEADLINE


def _summaries(
    session: Session,
    *,
    where: list[ColumnElement[bool]] | None = None,
    having: list[ColumnElement[bool]] | None = None,
    limit: int | None = None,
) -> list[Delivery]:
    """One summary per webhook id, aggregated in SQL (same on SQLite and PostgreSQL), newest first."""
    row = WebhookDelivery
    last_at = func.max(row.created_at)
    columns = (row.webhook_id, row.job_id, row.event_type)
    attempts = func.sum(case((row.attempt > 0, 1), else_=0))  # the queued row is not an attempt
    aggregates = (attempts, func.min(row.created_at), last_at, _success_flag())
    query = (
        select(*columns, *aggregates)
        .where(*(where or []))
        .group_by(*columns)
        .having(*(having or []))
        .order_by(last_at.desc())
        .limit(limit)
    )
    return [
        Delivery(webhook_id, job_id, event_type, int(attempts or 0), first_at, last_at, bool(succeeded))
        for webhook_id, job_id, event_type, attempts, first_at, last_at, succeeded in session.execute(query)
    ]


def _histories(session: Session, deliveries: list[Delivery]) -> list[History]:
    ids = [delivery.webhook_id for delivery in deliveries]
    rows: dict[str, list[WebhookDelivery]] = {webhook_id: [] for webhook_id in ids}
    query = select(WebhookDelivery).where(WebhookDelivery.webhook_id.in_(ids))
    for row in session.scalars(query.order_by(WebhookDelivery.attempt)):
        rows[row.webhook_id].append(row)
    return [
        History(delivery, [Attempt.of(row) for row in rows[delivery.webhook_id] if row.attempt > 0],
                dict(rows[delivery.webhook_id][-1].payload), rows[delivery.webhook_id][-1].url)
        for delivery in deliveries
    ]  # fmt: skip
