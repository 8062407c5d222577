"""The chat-worker registry: protocol kept with the registration, probes recorded, and a worker found
unhealthy passed over for a while instead of costing every caller a timeout."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.db.models import SystemConfig
from ourvidz.prompts.chat import ChatWorker
from ourvidz.registry import (
    UNHEALTHY_SKIP_SECONDS,
    probe,
    record_health,
    registered_chat_worker,
    save_worker,
    worker_key,
)
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
