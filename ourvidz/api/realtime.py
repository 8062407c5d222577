"""Realtime job updates: one Prefect event subscription per gateway, fanned out to its clients.

Clients connect with a WebSocket (`/realtime?access_token=<jwt>`) or, where WebSockets are blocked,
Server-Sent Events (`/realtime/sse`, bearer token). Each gets the spec's JobStatusUpdate for its own
jobs only; admins also get WorkerHealthUpdate messages.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from prefect.events import Event
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

from ourvidz.api.errors import ApiError
from ourvidz.api.events import JOB_EVENT_PREFIX, WORKER_EVENT_PREFIX, job_status_update, owner_of
from ourvidz.api.security import User, principal_from_token, with_granted_roles
from ourvidz.api.state import Gateway, gateway
from ourvidz.auth import Principal

logger = logging.getLogger(__name__)
router = APIRouter(tags=["realtime"])
QUEUE_SIZE = 256
RECONNECT_SECONDS = 1.0
SSE_KEEPALIVE_SECONDS = 15.0


class EventHub:
    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self._users: dict[uuid.UUID, set[asyncio.Queue[dict[str, Any]]]] = {}
        self._admins: set[asyncio.Queue[dict[str, Any]]] = set()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def connect(self, principal: Principal) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_SIZE)
        self._users.setdefault(principal.user_id, set()).add(queue)
        if principal.is_admin:
            self._admins.add(queue)
        return queue

    def disconnect(self, principal: Principal, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._users.get(principal.user_id, set()).discard(queue)
        self._admins.discard(queue)

    def route(self, event: Event) -> None:
        if event.event.startswith(JOB_EVENT_PREFIX):
            owner, message = owner_of(event), job_status_update(event)
            targets = self._users.get(owner, set()) if owner else set()
        elif event.event.startswith(WORKER_EVENT_PREFIX):
            message, targets = {"type": "worker_health", **event.payload}, self._admins
        else:
            return
        if message is None:
            return
        for queue in list(targets):
            if queue.full():  # a client that stopped reading loses its oldest update, not the gateway
                queue.get_nowait()
            queue.put_nowait(message)

    async def _run(self) -> None:
        while True:
            now = datetime.datetime.now(datetime.UTC)
            event_filter = EventFilter(
                event=EventNameFilter(prefix=[JOB_EVENT_PREFIX, WORKER_EVENT_PREFIX]),
                occurred=EventOccurredFilter(since=now, until=now + datetime.timedelta(days=3650)),
            )
            try:
                async with get_events_subscriber(filter=event_filter) as subscriber:
                    self.ready.set()
                    async for event in subscriber:
                        self.route(event)
            except Exception as exc:
                logger.warning("realtime event subscription lost (%s); reconnecting", exc)
            self.ready.clear()
            await asyncio.sleep(RECONNECT_SECONDS)


def _hub(gw: Gateway) -> EventHub:
    if gw.events is None:
        raise ApiError(503, "SERVICE_UNAVAILABLE", "realtime updates are not available")
    return gw.events


@router.websocket("/realtime")
async def realtime_socket(socket: WebSocket) -> None:
    gw: Gateway = socket.app.state.gateway
    token = socket.query_params.get("access_token")
    header = socket.headers.get("authorization", "")
    if token is None and header.lower().startswith("bearer "):
        token = header[7:].strip()
    try:
        principal = principal_from_token(gw, token)
        hub = _hub(gw)
        principal = await asyncio.to_thread(with_granted_roles, gw, principal)
    except ApiError as exc:  # accept first, so the client can read why it is closed
        await socket.accept()
        await socket.close(code=4401 if exc.status == 401 else 1013, reason=exc.code)
        return
    await socket.accept()
    queue = hub.connect(principal)
    try:
        while True:
            await socket.send_json(await queue.get())
    except WebSocketDisconnect:
        pass
    finally:
        hub.disconnect(principal, queue)


@router.get("/realtime/sse", response_class=StreamingResponse)
async def realtime_sse(
    request: Request, user: User, gw: Annotated[Gateway, Depends(gateway)]
) -> StreamingResponse:
    hub = _hub(gw)
    user = await asyncio.to_thread(with_granted_roles, gw, user)
    queue = hub.connect(user)

    async def stream() -> AsyncIterator[str]:
        try:
            yield ": connected\n\n"
            while not await request.is_disconnected():
                try:
                    message = await asyncio.wait_for(queue.get(), SSE_KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                yield f"data: {json.dumps(message)}\n\n"
        finally:
            hub.disconnect(user, queue)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"cache-control": "no-store"})
