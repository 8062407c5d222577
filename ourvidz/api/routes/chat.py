"""The playground chat (spec section 4): conversations and messages kept per user, the reply from the
registered chat worker under the conversation tier's system prompt, and the conversation as an SDXL
prompt.

A turn answers JSON (ChatResponse), or, with `"stream": true` or an Accept header that prefers
`text/event-stream`, server-sent events:

    event: delta            one per piece of the reply as the worker produces it
    data: {"content": "..."}

    event: done             the reply is stored; data is the ChatResponse
    data: {"success": true, "conversation_id": ..., "response": ..., "message_id": ..., ...}

    event: error            instead of `done` when the worker breaks off or its reply is unusable
    data: {"error": ..., "code": "CHAT_WORKER_UNAVAILABLE", "details": ..., "timestamp": ...}

The error's `details` hold the `conversation_id` (and the `reason`); nothing of a failed reply is
stored (a reply over MAX_CHAT_REPLY_CHARS fails too). The user's message is kept in every case; a
worker that cannot be reached or refuses the request is a 503 JSON error before any event is sent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Generator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.concurrency import iterate_in_threadpool

from ourvidz.api.deps import Gateway, GatewayDep, User
from ourvidz.api.errors import ApiError, error_body
from ourvidz.api.schemas.chat import ChatRequest, ChatResponse
from ourvidz.conversations import Turn, record_turn, store_reply
from ourvidz.policy import ContentTier
from ourvidz.prompts.chat import (
    MAX_CHAT_REPLY_CHARS,
    ChatStream,
    ChatWorker,
    EnhancerFailed,
    chat_completion,
    stream_chat_completion,
)
from ourvidz.prompts.templates import prompt_cache
from ourvidz.registry.workers import registered_chat_worker

logger = logging.getLogger(__name__)
router = APIRouter(tags=["chat"])
CHAT_TIMEOUT_SECONDS = 60.0
EVENT_STREAM = "text/event-stream"
_SSE_DESCRIPTION = (
    'With `stream: true` or `Accept: text/event-stream`: `event: delta` with `{"content": ...}` per piece'
    " of the reply, then `event: done` with the ChatResponse, or `event: error` with the error body"
)
_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {"content": {EVENT_STREAM: {"schema": {"type": "string", "description": _SSE_DESCRIPTION}}}},
    503: {"description": "No chat worker answers (CHAT_WORKER_UNAVAILABLE); the message is kept"},
}


@router.post("/playground-chat", response_model=ChatResponse, responses=_STREAM_DOC)
def playground_chat(
    body: ChatRequest, request: Request, response: Response, user: User, gw: GatewayDep
) -> ChatResponse | StreamingResponse:
    """One chat turn; the user's message is kept even when no chat worker answers (503)."""
    gw.limits.hit("enhance", user.user_id, response)
    templates = prompt_cache(gw.sessions, gw.settings.prompt_cache_check_seconds).current()
    turn = record_turn(
        gw.sessions, templates, user.user_id, body.message, conversation_id=body.conversation_id,
        project_id=body.project_id, requested=ContentTier(body.content_tier) if body.content_tier else None,
        policy=gw.policy(),
    )  # fmt: skip
    if body.stream or (body.stream is None and _prefers_event_stream(request.headers.get("accept"))):
        stream = _open_stream(gw, turn)
        headers = {k: v for k, v in response.headers.items() if k.startswith("x-ratelimit-")}
        return StreamingResponse(
            _closing(_events(gw, turn, stream)), media_type=EVENT_STREAM,
            headers={**headers, "cache-control": "no-store", "x-accel-buffering": "no"},
        )  # fmt: skip
    reply = _ask_chat_worker(gw, turn)
    message_id = store_reply(gw.sessions, turn, reply)
    return ChatResponse(
        conversation_id=turn.conversation_id, response=reply, message_id=message_id,
        content_tier=turn.tier, sdxl_prompt=turn.sdxl_prompt,
    )  # fmt: skip


def _unavailable(turn: Turn, message: str, reason: str | None = None) -> ApiError:
    return ApiError(503, "CHAT_WORKER_UNAVAILABLE", message, _unavailable_details(turn, reason))


def _unavailable_details(turn: Turn, reason: str | None = None) -> dict[str, str]:
    """Where the kept message is (a new conversation's id is known to the client no other way)."""
    return {"conversation_id": str(turn.conversation_id)} | ({"reason": reason} if reason else {})


def _chat_worker(gw: Gateway, turn: Turn) -> ChatWorker:
    chat_worker = registered_chat_worker(gw.sessions, gw.worker_egress)
    if chat_worker is None:
        raise _unavailable(turn, "no healthy chat worker is registered; your message was kept")
    return chat_worker


def _ask_chat_worker(gw: Gateway, turn: Turn) -> str:
    chat_worker = _chat_worker(gw, turn)
    try:
        reply = chat_completion(chat_worker, turn.messages, CHAT_TIMEOUT_SECONDS)
    except EnhancerFailed as exc:
        raise _unavailable(turn, "the chat worker did not answer; your message was kept", str(exc)) from None
    if len(reply) > MAX_CHAT_REPLY_CHARS:  # the same cap as a streamed reply
        reason = f"reply longer than {MAX_CHAT_REPLY_CHARS} characters"
        raise _unavailable(turn, "the chat worker's reply was unusable; your message was kept", reason)
    return reply


def _open_stream(gw: Gateway, turn: Turn) -> ChatStream:
    """The worker's reply stream, connected: a worker that cannot answer is the usual 503 here."""
    chat_worker = _chat_worker(gw, turn)
    try:
        return stream_chat_completion(chat_worker, turn.messages, CHAT_TIMEOUT_SECONDS)
    except EnhancerFailed as exc:
        raise _unavailable(turn, "the chat worker did not answer; your message was kept", str(exc)) from None


async def _closing(events: Generator[str, None, None]) -> AsyncIterator[str]:
    """The events, each step run in the thread pool, and closed however the response ends: a client
    that hangs up closes the worker's connection too, and no reply is stored."""
    try:
        async for event in iterate_in_threadpool(events):
            yield event
    finally:
        events.close()


def _events(gw: Gateway, turn: Turn, stream: ChatStream) -> Generator[str, None, None]:
    """`delta` events as the reply arrives, then `done` once it is stored, or `error` (nothing stored)."""
    parts: list[str] = []
    with stream:
        try:
            for chunk in stream:
                parts.append(chunk)
                yield _event("delta", {"content": chunk})
        except EnhancerFailed as exc:
            message = "the chat worker stopped answering; your message was kept"
            details = _unavailable_details(turn, str(exc))
            yield _event("error", error_body("CHAT_WORKER_UNAVAILABLE", message, details))
            return
    reply = "".join(parts)
    try:
        message_id = store_reply(gw.sessions, turn, reply)
    except (OperationalError, InterfaceError) as exc:  # the status line is sent: say it as an event
        logger.error("database unreachable: %s", exc)
        message = "the job database cannot be reached; the reply was not kept"
        yield _event("error", error_body("DATABASE_UNAVAILABLE", message, _unavailable_details(turn)))
        return
    done = ChatResponse(
        conversation_id=turn.conversation_id, response=reply, message_id=message_id,
        content_tier=turn.tier, sdxl_prompt=turn.sdxl_prompt,
    )  # fmt: skip
    yield _event("done", done.model_dump(mode="json"))


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


def _prefers_event_stream(accept: str | None) -> bool:
    """Whether the client asks for events first (as an EventSource does): `text/event-stream` is the
    first media type of its Accept header."""
    first = (accept or "").split(",", 1)[0].split(";", 1)[0]
    return first.strip().lower() == EVENT_STREAM
