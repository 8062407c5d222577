"""The worker registry: protocol kept with the registration, probes recorded, a worker found unhealthy
passed over for a while instead of costing every caller a timeout, and dead workers' registrations
dropped."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.db.models import SystemConfig
from ourvidz.prompts.chat import ChatWorker
from ourvidz.registry import (
    UNHEALTHY_SKIP_SECONDS,
    forget_worker,
    load_worker,
    probe,
    record_health,
    registered_chat_worker,
    save_worker,
    worker_key,
)
from ourvidz.worker_health import STALE_WORKER_SECONDS, probe_http_workers
from tests.orchestration.peers import FakeChatWorker


@pytest.fixture
def worker() -> Iterator[FakeChatWorker]:
    chat = FakeChatWorker()
    yield chat
    chat.stop()


def test_the_registered_protocol_is_kept(sessions: sessionmaker[Session], worker: FakeChatWorker) -> None:
    assert registered_chat_worker(sessions) is None
    save_worker(sessions, "chat", worker.url + "/", "register-chat-worker", {"protocol": "ourvidz"})
    assert registered_chat_worker(sessions) == ChatWorker(worker.url, "ourvidz")
    save_worker(sessions, "chat", worker.url, "update-worker-url")  # no protocol given: OpenAI's
    assert registered_chat_worker(sessions) == ChatWorker(worker.url, "openai")


def test_a_worker_found_unhealthy_is_passed_over_for_a_while(
    sessions: sessionmaker[Session], worker: FakeChatWorker
) -> None:
    save_worker(sessions, "chat", worker.url, "register-chat-worker")
    worker.healthy = False
    down = probe(worker.url)
    assert (down.healthy, down.error) == (False, "HTTP 503")
    record_health(sessions, "chat", worker.url, down)
    assert registered_chat_worker(sessions) is None
    with sessions.begin() as session:  # the mark ages past the skip window: the worker is tried again
        row = session.get_one(SystemConfig, worker_key("chat"))
        then = datetime.now(UTC) - timedelta(seconds=UNHEALTHY_SKIP_SECONDS + 1)
        row.value = {**row.value, "health": {**row.value["health"], "checkedAt": then.isoformat()}}
    assert registered_chat_worker(sessions) == ChatWorker(worker.url)
    worker.healthy = True
    record_health(sessions, "chat", worker.url, probe(worker.url))
    assert registered_chat_worker(sessions) == ChatWorker(worker.url)


def test_a_probe_of_a_replaced_worker_is_not_recorded(
    sessions: sessionmaker[Session], worker: FakeChatWorker
) -> None:
    save_worker(sessions, "chat", worker.url, "register-chat-worker")
    old = "http://127.0.0.1:9"
    record_health(sessions, "chat", old, probe(old))  # a late probe of the previous URL
    assert registered_chat_worker(sessions) == ChatWorker(worker.url)


def _age_failure(sessions: sessionmaker[Session], key: str, seconds: float) -> None:
    with sessions.begin() as session:
        row = session.get_one(SystemConfig, worker_key(key))
        since = (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat()
        row.value = {**row.value, "health": {**row.value["health"], "unhealthySince": since}}


def test_a_dead_workers_registration_is_dropped_after_failing_probes_for_long(
    sessions: sessionmaker[Session],
) -> None:
    dead = "http://127.0.0.1:9"  # nothing listens: every probe fails at once
    save_worker(sessions, "gpu:killed-worker", dead, "worker-start")
    save_worker(sessions, "chat", dead, "register-chat-worker")
    first = {o.worker_name: o for o in probe_http_workers(sessions)}
    assert first["killed-worker"].status == "unhealthy"
    assert load_worker(sessions, "gpu:killed-worker") is not None  # one failed probe is not enough
    _age_failure(sessions, "gpu:killed-worker", STALE_WORKER_SECONDS - 60)
    probe_http_workers(sessions)  # still failing, not yet long enough; the first failure time is kept
    assert load_worker(sessions, "gpu:killed-worker") is not None
    _age_failure(sessions, "gpu:killed-worker", STALE_WORKER_SECONDS + 1)
    _age_failure(sessions, "chat", STALE_WORKER_SECONDS + 1)
    last = {o.worker_name: o for o in probe_http_workers(sessions)}
    assert last["killed-worker"].status == "offline"
    assert "registration removed" in (last["killed-worker"].error or "")
    assert load_worker(sessions, "gpu:killed-worker") is None
    assert load_worker(sessions, "chat") is not None  # an operator's chat worker stays registered
    assert last[None].status == "unhealthy"


def test_a_worker_registered_again_elsewhere_is_not_forgotten(
    sessions: sessionmaker[Session], worker: FakeChatWorker
) -> None:
    save_worker(sessions, "gpu:restarted", worker.url, "worker-start")
    forget_worker(sessions, "gpu:restarted", "http://127.0.0.1:9")  # its old, dead address
    assert load_worker(sessions, "gpu:restarted") is not None
    forget_worker(sessions, "gpu:restarted", worker.url + "/")
    assert load_worker(sessions, "gpu:restarted") is None


def test_a_healthy_probe_clears_the_failure_clock(
    sessions: sessionmaker[Session], worker: FakeChatWorker
) -> None:
    save_worker(sessions, "gpu:flaky", worker.url, "worker-start")
    worker.healthy = False
    assert record_health(sessions, "gpu:flaky", worker.url, probe(worker.url)) == 0
    _age_failure(sessions, "gpu:flaky", 120)
    assert (record_health(sessions, "gpu:flaky", worker.url, probe(worker.url)) or 0) >= 120
    worker.healthy = True
    assert record_health(sessions, "gpu:flaky", worker.url, probe(worker.url)) is None
    worker.healthy = False
    assert record_health(sessions, "gpu:flaky", worker.url, probe(worker.url)) == 0
