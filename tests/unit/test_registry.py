"""The worker registry (`workers` table): protocol kept with the registration, probes recorded, a worker
found unhealthy passed over for a while instead of costing every caller a timeout, and dead workers'
registrations dropped."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.db.models import Worker
from ourvidz.db.types import utcnow
from ourvidz.prompts.chat import ChatWorker
from ourvidz.registry.health import STALE_WORKER_SECONDS, probe_registered
from ourvidz.registry.leases import give_up, leases, renew, take_expired
from ourvidz.registry.probes import probe
from ourvidz.registry.workers import (
    CHAT,
    STATUS_ENDPOINT,
    UNHEALTHY_SKIP_SECONDS,
    forget,
    record_probe,
    register,
    registered_chat_worker,
    registration,
)
from tests.peers import PEERS_ALLOWED, FakeChatWorker

DEAD = "http://127.0.0.1:9"  # nothing listens: every probe fails at once


@pytest.fixture
def worker() -> Iterator[FakeChatWorker]:
    chat = FakeChatWorker()
    yield chat
    chat.stop()


def test_the_registered_protocol_is_kept(sessions: sessionmaker[Session], worker: FakeChatWorker) -> None:
    assert registered_chat_worker(sessions, PEERS_ALLOWED) is None
    register(
        sessions, CHAT, worker.url + "/", "register-chat-worker", protocol="ourvidz", capabilities=["chat"]
    )
    assert registered_chat_worker(sessions, PEERS_ALLOWED) == ChatWorker(worker.url, "ourvidz", PEERS_ALLOWED)
    details = registration(sessions, CHAT).details()  # type: ignore[union-attr]
    assert details["capabilities"] == ["chat"] and details["registrationInfo"]["autoRegistered"] is True
    register(sessions, CHAT, worker.url, "update-worker-url")  # no protocol given: OpenAI's
    assert registered_chat_worker(sessions, PEERS_ALLOWED) == ChatWorker(worker.url, "openai", PEERS_ALLOWED)


def test_a_worker_found_unhealthy_is_passed_over_for_a_while(
    sessions: sessionmaker[Session], worker: FakeChatWorker
) -> None:
    register(sessions, CHAT, worker.url, "register-chat-worker")
    worker.healthy = False
    down = probe(worker.url, PEERS_ALLOWED)
    assert (down.healthy, down.error) == (False, "HTTP 503")
    record_probe(sessions, CHAT, "", worker.url, down)
    assert registered_chat_worker(sessions, PEERS_ALLOWED) is None
    _age(sessions, CHAT, "", probed=UNHEALTHY_SKIP_SECONDS + 1)  # the mark ages past the skip window
    assert registered_chat_worker(sessions, PEERS_ALLOWED) == ChatWorker(worker.url, egress=PEERS_ALLOWED)
    worker.healthy = True
    record_probe(sessions, CHAT, "", worker.url, probe(worker.url, PEERS_ALLOWED))
    assert registered_chat_worker(sessions, PEERS_ALLOWED) == ChatWorker(worker.url, egress=PEERS_ALLOWED)


def test_a_probe_of_a_replaced_worker_is_not_recorded(
    sessions: sessionmaker[Session], worker: FakeChatWorker
) -> None:
    register(sessions, CHAT, worker.url, "register-chat-worker")
    assert (
        record_probe(sessions, CHAT, "", DEAD, probe(DEAD, PEERS_ALLOWED)) is None
    )  # a late probe of the previous URL
    assert registered_chat_worker(sessions, PEERS_ALLOWED) == ChatWorker(worker.url, egress=PEERS_ALLOWED)


def _age(
    sessions: sessionmaker[Session], kind: str, name: str, *, failing: float = 0, probed: float = 0
) -> None:
    """Move a worker's failure clock and last probe into the past."""
    now = utcnow()
    values = {"unhealthy_since": now - timedelta(seconds=failing)} if failing else {}
    if probed:
        values["probed_at"] = now - timedelta(seconds=probed)
    with sessions.begin() as session:
        session.execute(update(Worker).where(Worker.kind == kind, Worker.name == name).values(**values))


def test_a_dead_workers_registration_is_dropped_after_failing_probes_for_long(
    sessions: sessionmaker[Session],
) -> None:
    killed = "gpu:killed-worker"
    register(sessions, STATUS_ENDPOINT, DEAD, "worker-start", name=killed, pool="gpu", queues=["sdxl"])
    register(sessions, CHAT, DEAD, "register-chat-worker")
    first = {o.worker_name: o for o in probe_registered(sessions, PEERS_ALLOWED)}
    assert (first["killed-worker"].worker_type, first["killed-worker"].status) == ("gpu", "unhealthy")
    assert registration(sessions, STATUS_ENDPOINT, killed) is not None  # one failed probe is not enough
    _age(sessions, STATUS_ENDPOINT, killed, failing=STALE_WORKER_SECONDS - 60)
    probe_registered(
        sessions, PEERS_ALLOWED
    )  # still failing, not yet long enough; the first failure time is kept
    assert registration(sessions, STATUS_ENDPOINT, killed) is not None
    _age(sessions, STATUS_ENDPOINT, killed, failing=STALE_WORKER_SECONDS + 1)
    _age(sessions, CHAT, "", failing=STALE_WORKER_SECONDS + 1)
    last = {o.worker_name: o for o in probe_registered(sessions, PEERS_ALLOWED)}
    assert last["killed-worker"].status == "offline"
    assert "registration removed" in (last["killed-worker"].error or "")
    assert registration(sessions, STATUS_ENDPOINT, killed) is None
    assert registration(sessions, CHAT) is not None  # an operator's chat worker stays registered
    assert last[None].status == "unhealthy"


def test_a_worker_registered_again_elsewhere_is_not_forgotten(
    sessions: sessionmaker[Session], worker: FakeChatWorker
) -> None:
    register(sessions, STATUS_ENDPOINT, worker.url, "worker-start", name="gpu:restarted")
    forget(sessions, STATUS_ENDPOINT, "gpu:restarted", DEAD)  # its old, dead address
    assert registration(sessions, STATUS_ENDPOINT, "gpu:restarted") is not None
    forget(sessions, STATUS_ENDPOINT, "gpu:restarted", worker.url + "/")
    assert registration(sessions, STATUS_ENDPOINT, "gpu:restarted") is None


def test_a_healthy_probe_clears_the_failure_clock(
    sessions: sessionmaker[Session], worker: FakeChatWorker
) -> None:
    register(sessions, STATUS_ENDPOINT, worker.url, "worker-start", name="gpu:flaky")
    worker.healthy = False
    assert (
        record_probe(sessions, STATUS_ENDPOINT, "gpu:flaky", worker.url, probe(worker.url, PEERS_ALLOWED))
        == 0
    )
    _age(sessions, STATUS_ENDPOINT, "gpu:flaky", failing=120)
    assert (
        record_probe(sessions, STATUS_ENDPOINT, "gpu:flaky", worker.url, probe(worker.url, PEERS_ALLOWED))
        or 0
    ) >= 120
    worker.healthy = True
    assert (
        record_probe(sessions, STATUS_ENDPOINT, "gpu:flaky", worker.url, probe(worker.url, PEERS_ALLOWED))
        is None
    )
    worker.healthy = False
    assert (
        record_probe(sessions, STATUS_ENDPOINT, "gpu:flaky", worker.url, probe(worker.url, PEERS_ALLOWED))
        == 0
    )


def test_a_lease_names_its_runs_until_it_expires_and_is_taken_once(sessions: sessionmaker[Session]) -> None:
    live, dead, gone = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    runs = [uuid.uuid4(), uuid.uuid4()]
    renew(sessions, live, worker="w1", pool="gpu", runs=[], seconds=60)
    renew(sessions, dead, worker="w2", pool="gpu", runs=runs[:1], seconds=60)
    renew(sessions, dead, worker="w2", pool="gpu", runs=runs, seconds=5)  # renewed with what it holds now
    renew(sessions, gone, worker="w3", pool="gpu", runs=runs[:1], seconds=60)
    give_up(sessions, gone)  # stopped cleanly
    assert [(lease.worker, set(lease.runs)) for lease in leases(sessions)] == [
        ("w1", set()),
        ("w2", set(runs)),
    ]
    assert take_expired(sessions) == []
    later = utcnow() + timedelta(seconds=6)
    (taken,) = take_expired(sessions, later)
    assert (taken.id, set(taken.runs), taken.pid) == (dead, set(runs), os.getpid())
    assert take_expired(sessions, later) == []  # taken once: nobody recovers its runs twice
    assert [lease.worker for lease in leases(sessions)] == ["w1"]
