"""The playground chat over real HTTP (the gateway in process): the tier's system prompt, SSE
streaming from both worker protocols, and what is kept when the chat worker fails before or during a
reply."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from ourvidz.api.deps import SERVICE_KEY_HEADER
from ourvidz.db.models import Conversation, Message
from ourvidz.jobs.create import ensure_profile
from ourvidz.policy import ContentTier
from ourvidz.prompts.chat import MAX_CHAT_REPLY_CHARS
from ourvidz.prompts.templates import default_templates
from tests.gateway.conftest import Gateway
from tests.peers import FakeChatWorker

Register = Callable[..., FakeChatWorker]
Event = tuple[str, dict[str, Any]]


@pytest.fixture
def register(gateway: Gateway) -> Iterator[Register]:
    """Registers a new FakeChatWorker through the gateway (`protocol` as given); all are stopped and the
    registration removed afterwards."""
    started: list[FakeChatWorker] = []

    def register(protocol: str = "openai") -> FakeChatWorker:
        worker = FakeChatWorker()
        started.append(worker)
        assert gateway.settings.service_key is not None
        registered = httpx.post(
            f"{gateway.url}/register-chat-worker",
            json={"workerUrl": worker.url, "capabilities": ["chat"], "protocol": protocol},
            headers={SERVICE_KEY_HEADER: gateway.settings.service_key.get_secret_value()},
        )
        assert registered.status_code == 200, registered.text
        return worker

    yield register
    gateway.forget_chat_worker()
    for worker in started:
        worker.stop()


@pytest.fixture
def chat_worker(register: Register) -> FakeChatWorker:
    return register()


def _user(gateway: Gateway, tier: ContentTier = ContentTier.ARTISTIC) -> uuid.UUID:
    user_id = uuid.uuid4()
    ensure_profile(gateway.sessions, user_id, tier=tier, age_verified=tier is not ContentTier.ARTISTIC)
    return user_id


def _post(gateway: Gateway, user: uuid.UUID, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{gateway.url}/playground-chat", json=body, headers=gateway.headers(user), timeout=30)


def _stream(
    gateway: Gateway, user: uuid.UUID, body: dict[str, Any], accept: str | None = None
) -> tuple[httpx.Response, list[Event], list[float]]:
    """One turn read as it arrives: the response, its events (name, data) and when each came."""
    headers = gateway.headers(user) | ({"accept": accept} if accept else {})
    url = f"{gateway.url}/playground-chat"
    events: list[Event] = []
    arrived: list[float] = []
    with httpx.stream("POST", url, json=body, headers=headers, timeout=30) as answer:
        if not answer.headers["content-type"].startswith("text/event-stream"):
            answer.read()
            return answer, events, arrived
        name, data = "message", []
        for line in answer.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif not line and data:
                events.append((name, json.loads("\n".join(data))))
                arrived.append(time.monotonic())
                name, data = "message", []
    return answer, events, arrived


def _contents(gateway: Gateway, conversation_id: str) -> list[tuple[str, str]]:
    with gateway.sessions() as session:
        query = select(Message).where(Message.conversation_id == uuid.UUID(conversation_id))
        return [(m.sender, m.content) for m in session.scalars(query.order_by(Message.created_at))]


def _system(worker: FakeChatWorker) -> dict[str, str]:
    return worker.requests[-1]["messages"][0]


def _roles(worker: FakeChatWorker) -> list[str]:
    return [m["role"] for m in worker.requests[-1]["messages"]]


def test_a_streamed_reply_arrives_in_deltas_and_is_stored(
    gateway: Gateway, chat_worker: FakeChatWorker
) -> None:
    user = _user(gateway)
    chat_worker.chunk_pause = 0.3
    answer, events, arrived = _stream(gateway, user, {"message": "a quiet harbor", "stream": True})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert "x-ratelimit-remaining" in answer.headers and answer.headers["cache-control"] == "no-store"
    names = [name for name, _ in events]
    assert names == ["delta"] * (len(names) - 1) + ["done"] and len(names) >= 4, names
    deltas = [data["content"] for name, data in events if name == "delta"]
    assert deltas == ["echo:", " a", " quiet", " harbor"]
    assert arrived[-1] - arrived[0] > 0.6, "the deltas are passed on as the worker produces them"
    done = events[-1][1]
    assert done["response"] == "".join(deltas) == "echo: a quiet harbor"
    assert (done["content_tier"], done["sdxl_prompt"]) == ("artistic", "a quiet harbor") and done["success"]
    with gateway.sessions() as session:
        stored = session.get(Message, uuid.UUID(done["message_id"]))
        assert stored is not None
        assert (stored.sender, stored.content) == ("assistant", "echo: a quiet harbor")
        assert str(stored.conversation_id) == done["conversation_id"]
    assert (chat_worker.paths[-1], chat_worker.requests[-1]["stream"]) == ("/v1/chat/completions", True)
    assert _system(chat_worker) == {
        "role": "system",
        "content": default_templates().chat_prompt(ContentTier.ARTISTIC),
    }
    assert _roles(chat_worker) == ["system", "user"]


def test_the_accept_header_chooses_the_stream(gateway: Gateway, chat_worker: FakeChatWorker) -> None:
    user = _user(gateway)
    first = _post(gateway, user, {"message": "a red kite"})
    assert first.status_code == 200 and first.json()["response"] == "echo: a red kite"
    conversation = first.json()["conversation_id"]
    turn = {"message": "over the hill", "conversation_id": conversation}
    answer, events, _ = _stream(gateway, user, turn, accept="text/event-stream")
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert events[-1][0] == "done" and events[-1][1]["response"] == "echo: over the hill"
    assert "".join(data["content"] for name, data in events if name == "delta") == "echo: over the hill"
    assert _roles(chat_worker) == ["system", "user", "assistant", "user"]
    for accept, body in [
        ("application/json, text/event-stream;q=0.5", {}),  # JSON preferred
        ("*/*", {}),
        ("text/event-stream", {"stream": False}),  # the body's explicit choice wins
    ]:
        plain, events, _ = _stream(gateway, user, {**turn, "message": "and back", **body}, accept=accept)
        assert plain.headers["content-type"].startswith("application/json") and not events, accept
        assert plain.json()["response"] == "echo: and back"
    assert _contents(gateway, conversation)[-2:] == [("user", "and back"), ("assistant", "echo: and back")]


def test_the_system_prompt_follows_the_conversation_tier(
    gateway: Gateway, chat_worker: FakeChatWorker
) -> None:
    templates = default_templates()
    user = _user(gateway, ContentTier.EXPLICIT)
    first = _post(gateway, user, {"message": "a garden at noon"})
    assert first.json()["content_tier"] == "artistic"
    assert _system(chat_worker)["content"] == templates.chat_prompt(ContentTier.ARTISTIC)
    conversation = first.json()["conversation_id"]
    raised = _post(gateway, user, {"message": "the same garden", "conversation_id": conversation,
                                     "content_tier": "explicit"})  # fmt: skip
    assert raised.status_code == 200 and raised.json()["content_tier"] == "explicit"
    explicit = {"role": "system", "content": templates.chat_prompt(ContentTier.EXPLICIT)}
    assert _system(chat_worker) == explicit
    assert explicit["content"] != templates.chat_prompt(ContentTier.ARTISTIC)
    later = {"message": "now at dusk", "conversation_id": conversation, "stream": True}
    _, events, _ = _stream(gateway, user, later)
    assert events[-1][0] == "done" and events[-1][1]["content_tier"] == "explicit"
    assert _system(chat_worker) == explicit, "a later turn without content_tier stays at the raised tier"
    assert _roles(chat_worker) == ["system", "user", "assistant", "user", "assistant", "user"]
    with gateway.sessions() as session:
        stored = session.get(Conversation, uuid.UUID(conversation))
        assert stored is not None and stored.content_tier == ContentTier.EXPLICIT
    assert all(sender != "system" for sender, _ in _contents(gateway, conversation))
    fresh = _post(gateway, user, {"message": "a new garden", "content_tier": "explicit"})
    assert fresh.json()["content_tier"] == "explicit" and _system(chat_worker) == explicit


def test_a_plain_user_cannot_ask_for_a_higher_tier_even_streamed(
    gateway: Gateway, chat_worker: FakeChatWorker
) -> None:
    asked = len(chat_worker.requests)
    body = {"message": "a garden at noon", "content_tier": "explicit", "stream": True}
    refused, events, _ = _stream(gateway, _user(gateway), body)
    assert (refused.status_code, refused.json()["code"], events) == (403, "CONTENT_TIER_NOT_ALLOWED", [])
    assert len(chat_worker.requests) == asked


def test_an_ourvidz_worker_answers_through_its_chat_endpoint(gateway: Gateway, register: Register) -> None:
    worker = register("ourvidz")
    user = _user(gateway)
    first = _post(gateway, user, {"message": "a paper boat"})
    assert first.status_code == 200 and first.json()["response"] == "echo: a paper boat"
    assert worker.paths == ["/chat"] and "stream" not in worker.requests[-1]
    assert _system(worker)["content"] == default_templates().chat_prompt(ContentTier.ARTISTIC)
    turn = {"message": "on a pond", "conversation_id": first.json()["conversation_id"], "stream": True}
    answer, events, _ = _stream(gateway, user, turn)
    assert answer.status_code == 200 and worker.paths == ["/chat", "/chat"]
    assert [name for name, _ in events] == ["delta", "done"]
    assert events[0][1] == {"content": "echo: on a pond"} and events[1][1]["response"] == "echo: on a pond"
    assert _contents(gateway, turn["conversation_id"])[-1] == ("assistant", "echo: on a pond")


def test_a_worker_failing_mid_stream_gives_an_error_event_and_keeps_only_the_message(
    gateway: Gateway, chat_worker: FakeChatWorker
) -> None:
    chat_worker.fail_mid_stream = True
    answer, events, _ = _stream(gateway, _user(gateway), {"message": "a long story", "stream": True})
    assert answer.status_code == 200
    assert [name for name, _ in events] == ["delta", "error"]
    assert events[0][1] == {"content": "echo:"}
    error = events[1][1]
    assert set(error) == {"error", "code", "details", "timestamp"}
    assert error["code"] == "CHAT_WORKER_UNAVAILABLE" and "kept" in error["error"]
    assert _contents(gateway, error["details"]["conversation_id"]) == [("user", "a long story")]


def test_an_unreachable_worker_in_stream_mode_is_a_503_and_the_message_is_kept(
    gateway: Gateway, chat_worker: FakeChatWorker
) -> None:
    user = _user(gateway)
    first = _post(gateway, user, {"message": "a stone bridge"})
    conversation = first.json()["conversation_id"]
    chat_worker.healthy = False
    refused, events, _ = _stream(gateway, user, {"message": "in fog", "conversation_id": conversation},
                                 accept="text/event-stream")  # fmt: skip
    assert (refused.status_code, refused.json()["code"], events) == (503, "CHAT_WORKER_UNAVAILABLE", [])
    chat_worker.stop()
    body = {"message": "in rain", "conversation_id": conversation, "stream": True}
    refused, events, _ = _stream(gateway, user, body)
    assert refused.headers["content-type"].startswith("application/json") and not events
    assert (refused.status_code, refused.json()["code"]) == (503, "CHAT_WORKER_UNAVAILABLE")
    assert refused.json()["details"]["conversation_id"] == conversation
    assert [content for _, content in _contents(gateway, conversation)] == [
        "a stone bridge", "echo: a stone bridge", "in fog", "in rain",
    ]  # fmt: skip


def test_another_user_cannot_stream_into_a_conversation(
    gateway: Gateway, chat_worker: FakeChatWorker
) -> None:
    owner = _user(gateway)
    conversation = _post(gateway, owner, {"message": "a tall tower"}).json()["conversation_id"]
    asked = len(chat_worker.requests)
    body = {"message": "peek", "conversation_id": conversation, "stream": True}
    theirs, events, _ = _stream(gateway, _user(gateway), body)
    assert (theirs.status_code, theirs.json()["code"], events) == (404, "NOT_FOUND", [])
    assert len(chat_worker.requests) == asked
    assert _contents(gateway, conversation) == [
        ("user", "a tall tower"), ("assistant", "echo: a tall tower"),
    ]  # fmt: skip


def test_a_client_that_hangs_up_stops_the_worker_and_stores_no_reply(
    gateway: Gateway, chat_worker: FakeChatWorker
) -> None:
    user = _user(gateway)
    chat_worker.chunk_pause = 0.3
    body = {"message": " ".join(["a long walk by the river"] * 4), "stream": True}
    url = f"{gateway.url}/playground-chat"
    with httpx.stream("POST", url, json=body, headers=gateway.headers(user), timeout=30) as answer:
        first = next(line for line in answer.iter_lines() if line.startswith("data:"))
    assert json.loads(first[5:]) == {"content": "echo:"}
    for _ in range(50):
        if chat_worker.cut_streams:
            break
        time.sleep(0.1)
    assert chat_worker.cut_streams == 1, "the gateway hung up on the worker too"
    with gateway.sessions() as session:
        conversation = session.scalars(select(Conversation).where(Conversation.user_id == user)).one()
    assert _contents(gateway, str(conversation.id)) == [("user", body["message"])]


def test_an_overlong_streamed_reply_is_refused_and_not_stored(
    gateway: Gateway, chat_worker: FakeChatWorker
) -> None:
    chat_worker.chunk_pause = 0.0
    chat_worker.reply = " ".join(["a calm sea"] * (MAX_CHAT_REPLY_CHARS // 10 + 10))
    _, events, _ = _stream(gateway, _user(gateway), {"message": "the sea", "stream": True})
    assert {name for name, _ in events[:-1]} == {"delta"} and events[-1][0] == "error"
    error = events[-1][1]
    assert error["details"]["reason"] == f"reply longer than {MAX_CHAT_REPLY_CHARS} characters"
    assert sum(len(data["content"]) for _, data in events[:-1]) <= MAX_CHAT_REPLY_CHARS
    assert _contents(gateway, error["details"]["conversation_id"]) == [("user", "the sea")]
    plain = _post(gateway, _user(gateway), {"message": "the sea"})  # the same cap without a stream
    assert (plain.status_code, plain.json()["code"]) == (503, "CHAT_WORKER_UNAVAILABLE")
    assert plain.json()["details"]["reason"] == error["details"]["reason"]
    assert _contents(gateway, plain.json()["details"]["conversation_id"]) == [("user", "the sea")]
