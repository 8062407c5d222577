"""Webhook redelivery: the backoff schedule and its deadline, which deliveries are due, no resend after
a success, an admin's redelivery, and two runs that never send the same webhook at once (PostgreSQL).

Real SQLite and PostgreSQL, a real receiver on loopback. Time is moved by passing `now`, or by dating
attempt rows back, never by waiting.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from ourvidz.db import migrate
from ourvidz.db.models import WebhookDelivery
from ourvidz.db.session import make_engine, make_session_factory
from ourvidz.job_status import JobStatus
from ourvidz.jobs.conclude import conclude
from ourvidz.jobs.create import JobRequest, create_job, ensure_profile
from ourvidz.jobs.lifecycle import Announcer
from ourvidz.jobs.references import ReferenceRules
from ourvidz.webhooks import (
    DEADLINE,
    QUEUED_GRACE,
    Delivery,
    DeliveryStatus,
    WebhookFailed,
    WebhookSender,
    backoff,
    deliver,
    deliver_due,
    due_deliveries,
    list_deliveries,
    redeliver,
    webhook_id_for,
)
from tests.conftest import private_schema
from tests.peers import PEERS_ALLOWED, Receiver

SECRET = "whsec_" + "c2VjcmV0LWZvci13ZWJob29rLXRlc3RzLTMyYnl0ZXM="
SENDER = WebhookSender(SECRET, PEERS_ALLOWED)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver(outage_seconds=3600)  # down until the test calls recover()
    yield receiver
    receiver.close()


def _job(sessions: sessionmaker[Session]) -> uuid.UUID:
    user_id = uuid.uuid4()
    ensure_profile(sessions, user_id)
    request = JobRequest(user_id=user_id, job_type="sdxl_image_fast", prompt="a lighthouse")
    return create_job(sessions, request).job.id


def _first_attempt(sessions: sessionmaker[Session], url: str, event: str = "job.completed") -> str:
    """A job and its webhook's first attempt (as the generation flow makes it); its webhook id."""
    job_id = _job(sessions)
    payload = {"job_id": str(job_id), "status": event.removeprefix("job."), "job_type": "sdxl_image_fast"}
    with contextlib.suppress(WebhookFailed):
        deliver(sessions, SENDER, url=url, job_id=job_id, event_type=event, payload=payload)
    return webhook_id_for(job_id, event)


def _attempts(sessions: sessionmaker[Session], webhook_id: str) -> list[WebhookDelivery]:
    with sessions() as session:
        query = sa.select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
        return list(session.scalars(query.order_by(WebhookDelivery.attempt)))


def _date_back(sessions: sessionmaker[Session], webhook_id: str, by: timedelta) -> None:
    """Move a delivery's attempts into the past, as if `by` had gone by since."""
    with sessions.begin() as session:
        for row in session.scalars(
            sa.select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
        ):
            row.created_at -= by


def _delivery(attempts: int, first: datetime, last: datetime, succeeded: bool = False) -> Delivery:
    return Delivery("msg_x", None, "job.completed", attempts, first, last, succeeded)


def test_backoff_doubles_from_5_s_to_a_5_min_cap() -> None:
    assert [backoff(n).total_seconds() for n in range(1, 10)] == [5, 10, 20, 40, 80, 160, 300, 300, 300]
    assert backoff(10_000) == timedelta(minutes=5)


def test_schedule_covers_a_60_s_outage_and_stops_at_the_deadline() -> None:
    """Follow the schedule of a receiver that never answers: attempts come closer than the cap, none
    is scheduled past 1 h, and a receiver back after 60 s is tried again within 40 s."""
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    times = [t0, t0 + timedelta(seconds=0.5), t0 + timedelta(seconds=2)]  # first attempt + quick retries
    while (due := _delivery(len(times), t0, times[-1]).next_attempt_at) is not None:
        times.append(due)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times[2:])]
    assert gaps[:6] == [20, 40, 80, 160, 300, 300]
    assert times[-1] < t0 + DEADLINE <= times[-1] + backoff(len(times))
    assert len(times) == 17
    first_after_outage = next(t for t in times if t >= t0 + timedelta(seconds=60))
    assert first_after_outage - (t0 + timedelta(seconds=60)) <= timedelta(seconds=40)


def test_status_pending_until_the_deadline_then_failed() -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    pending = _delivery(3, t0, t0 + timedelta(seconds=2))
    assert pending.next_attempt_at == t0 + timedelta(seconds=22)
    assert pending.status(t0 + timedelta(seconds=10)) is DeliveryStatus.PENDING
    assert not pending.is_due(t0 + timedelta(seconds=21)) and pending.is_due(t0 + timedelta(seconds=22))
    assert pending.status(t0 + DEADLINE) is DeliveryStatus.FAILED and not pending.is_due(t0 + DEADLINE)
    last_one = _delivery(15, t0, t0 + DEADLINE - timedelta(minutes=4))  # next would be past the deadline
    assert last_one.next_attempt_at is None
    assert last_one.status(t0 + DEADLINE - timedelta(minutes=1)) is DeliveryStatus.FAILED
    done = _delivery(1, t0, t0, succeeded=True)
    assert done.next_attempt_at is None and done.status(t0 + DEADLINE * 2) is DeliveryStatus.SUCCEEDED


def test_due_selection(sessions: sessionmaker[Session], receiver: Receiver) -> None:
    failing = _first_attempt(sessions, receiver.url)
    first = _attempts(sessions, failing)[0].created_at
    assert due_deliveries(sessions, first + timedelta(seconds=4)) == []
    (due,) = due_deliveries(sessions, first + timedelta(seconds=5))
    assert (due.webhook_id, due.attempts, due.succeeded) == (failing, 1, False)
    assert due_deliveries(sessions, first + DEADLINE) == []  # given up
    receiver.recover()
    delivered = _first_attempt(sessions, receiver.url)
    assert [d.webhook_id for d in due_deliveries(sessions, first + timedelta(minutes=30))] == [failing]
    assert delivered not in {d.webhook_id for d in due_deliveries(sessions, first + timedelta(minutes=59))}


def test_receiver_down_then_back_gets_each_webhook_once(
    sessions: sessionmaker[Session], receiver: Receiver
) -> None:
    ids = [_first_attempt(sessions, receiver.url, event) for event in ("job.completed", "job.failed")]
    report = deliver_due(sessions, SENDER, datetime.now(UTC) + timedelta(seconds=6))
    assert (report.delivered, report.pending, report.given_up, len(report.attempts)) == (0, 2, 0, 2)
    assert [len(_attempts(sessions, webhook_id)) for webhook_id in ids] == [2, 2]
    receiver.recover()
    assert deliver_due(sessions, SENDER).attempts == []  # backoff(2) = 10 s has not passed
    report = deliver_due(sessions, SENDER, datetime.now(UTC) + timedelta(seconds=11))
    assert (report.delivered, report.pending, report.given_up) == (2, 0, 0)
    for later in (timedelta(seconds=30), timedelta(minutes=30)):  # never sent again after a success
        assert deliver_due(sessions, SENDER, datetime.now(UTC) + later).attempts == []
    assert receiver.accepted() == Counter(dict.fromkeys(ids, 1))
    assert len(receiver.requests) == 6
    verifier = Webhook(SECRET)
    for request in receiver.requests:
        assert verifier.verify(request.body, request.headers)["job_type"] == "sdxl_image_fast"
    tampered = receiver.requests[-1]
    with pytest.raises(WebhookVerificationError):
        verifier.verify(tampered.body.replace(b"sdxl", b"wan_"), tampered.headers)
    rows = _attempts(sessions, ids[0])
    assert [(r.attempt, r.status_code, r.succeeded) for r in rows] == [(1, 503, False), (2, 503, False),
                                                                       (3, 200, True)]  # fmt: skip


def test_last_attempt_before_the_deadline_is_given_up(
    sessions: sessionmaker[Session], receiver: Receiver
) -> None:
    webhook_id = _first_attempt(sessions, receiver.url)
    # 8 s before its deadline: due (5 s after the first), and the next one (10 s later) would be past it
    _date_back(sessions, webhook_id, DEADLINE - timedelta(seconds=8))
    report = deliver_due(sessions, SENDER)
    assert (report.delivered, report.given_up, report.pending) == (0, 1, 0)
    (history,) = list_deliveries(sessions, webhook_id=webhook_id)
    assert history.delivery.status(datetime.now(UTC)) is DeliveryStatus.FAILED
    assert deliver_due(sessions, SENDER, datetime.now(UTC) + timedelta(minutes=1)).attempts == []


def test_redeliver_sends_the_stored_event_again(sessions: sessionmaker[Session], receiver: Receiver) -> None:
    receiver.recover()
    webhook_id = _first_attempt(sessions, receiver.url)
    time.sleep(1.05)  # a new second: a new timestamp, so a new signature
    attempt = redeliver(sessions, SENDER, webhook_id)
    assert attempt is not None
    assert (attempt.webhook_id, attempt.attempt, attempt.succeeded, attempt.status_code) == (
        webhook_id, 2, True, 200
    )  # fmt: skip
    first, again = receiver.requests
    assert first.body == again.body and first.headers["webhook-id"] == again.headers["webhook-id"]
    assert int(again.headers["webhook-timestamp"]) > int(first.headers["webhook-timestamp"])
    assert again.headers["webhook-signature"] != first.headers["webhook-signature"]
    Webhook(SECRET).verify(again.body, again.headers)
    assert redeliver(sessions, SENDER, "msg_unknown") is None


def test_list_deliveries_filters(sessions: sessionmaker[Session], receiver: Receiver) -> None:
    failing = _first_attempt(sessions, receiver.url)
    receiver.recover()
    delivered = _first_attempt(sessions, receiver.url)
    old = _first_attempt(sessions, "http://127.0.0.1:9/closed")
    _date_back(sessions, old, DEADLINE * 2)

    def ids(**filters: object) -> list[str]:
        return [h.delivery.webhook_id for h in list_deliveries(sessions, **filters)]  # type: ignore[arg-type]

    assert ids() == [delivered, failing, old]  # most recently attempted first
    assert ids(status=DeliveryStatus.SUCCEEDED) == [delivered]
    assert ids(status=DeliveryStatus.PENDING) == [failing]
    assert ids(status=DeliveryStatus.FAILED) == [old]
    assert ids(limit=1) == [delivered]
    (history,) = list_deliveries(sessions, webhook_id=old)
    assert history.attempts[0].error is not None and history.attempts[0].status_code is None
    job_id = history.delivery.job_id
    assert ids(job_id=job_id) == [old] and history.payload["job_id"] == str(job_id)


@pytest.fixture
def postgres_sessions(postgres_admin: sa.Engine) -> Iterator[sessionmaker[Session]]:
    with private_schema(postgres_admin) as url:
        migrate.upgrade(url)
        engine = make_engine(url)
        yield make_session_factory(engine)
        engine.dispose()


@pytest.mark.postgres
def test_two_runs_at_once_send_a_due_webhook_once(postgres_sessions: sessionmaker[Session]) -> None:
    """PostgreSQL row locks: the second run skips what the first is sending (SQLite has no such locks)."""
    receiver = Receiver(failures=1, delay_seconds=0.5)
    try:
        webhook_id = _first_attempt(postgres_sessions, receiver.url)
        later = datetime.now(UTC) + timedelta(seconds=6)
        reports = []
        runs = [threading.Thread(target=lambda: reports.append(deliver_due(postgres_sessions, SENDER, later)))
                for _ in range(2)]  # fmt: skip
        for run in runs:
            run.start()
        for run in runs:
            run.join()
        assert sorted(r.delivered for r in reports) == [0, 1]  # the other run skipped it
        assert receiver.accepted() == Counter({webhook_id: 1}) and len(receiver.requests) == 2
        assert [a.attempt for a in _attempts(postgres_sessions, webhook_id)] == [1, 2]
    finally:
        receiver.close()


def test_a_webhook_queued_with_the_ending_is_sent_even_if_no_first_attempt_was_made(
    sessions: sessionmaker[Session], receiver: Receiver
) -> None:
    """The process that ended the job died before its first attempt (here: an announcer that sends
    nothing): the queued row makes deliver-webhooks send it once QUEUED_GRACE has passed."""
    receiver.recover()
    user_id = uuid.uuid4()
    ensure_profile(sessions, user_id)
    request = JobRequest(
        user_id=user_id, job_type="sdxl_image_fast", prompt="a cove", webhook_url=receiver.url
    )
    job_id = create_job(sessions, request, rules=ReferenceRules(egress=PEERS_ALLOWED)).job.id
    conclude(sessions, job_id, JobStatus.CANCELLED, announcer=Announcer(sessions, None))  # no attempt
    webhook_id = webhook_id_for(job_id, "job.cancelled")
    (history,) = list_deliveries(sessions, webhook_id=webhook_id)
    assert history.attempts == [] and history.delivery.status(datetime.now(UTC)) is DeliveryStatus.PENDING
    assert history.payload["status"] == "cancelled" and history.url == receiver.url
    assert deliver_due(sessions, SENDER).attempts == []  # its first attempt may still be on its way
    report = deliver_due(sessions, SENDER, datetime.now(UTC) + QUEUED_GRACE + timedelta(seconds=1))
    assert (report.delivered, len(receiver.requests)) == (1, 1)
    assert [(row.attempt, row.succeeded) for row in _attempts(sessions, webhook_id)] == [
        (0, False),
        (1, True),
    ]
    assert deliver_due(sessions, SENDER, datetime.now(UTC) + timedelta(minutes=10)).attempts == []
