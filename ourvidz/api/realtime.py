"""Realtime job updates over a WebSocket or Server-Sent Events, from the gateway's event hub.

Clients connect with a WebSocket (`/realtime?access_token=<jwt>`) or, where WebSockets are blocked,
Server-Sent Events (`/realtime/sse`, bearer token). Each gets the spec's JobStatusUpdate for its own
jobs only; admins also get WorkerHealthUpdate messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse

from ourvidz.api.deps import Gateway, GatewayDep, User, principal_from_token, with_granted_roles
from ourvidz.api.errors import ApiError
from ourvidz.api.hub import EventHub

logger = logging.getLogger(__name__)
router = APIRouter(tags=["realtime"])
SSE_KEEPALIVE_SECONDS = 15.0


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
    # two tasks: one forwards updates, one reads until the client closes; a client that goes away while
    # no update comes is noticed by the reader, so its handler and subscription end with it
    tasks = [asyncio.create_task(_forward(socket, queue)), asyncio.create_task(_until_closed(socket))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        hub.disconnect(principal, queue)


async def _forward(socket: WebSocket, queue: asyncio.Queue[dict[str, Any]]) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):  # RuntimeError: sent after the close
        while True:
            await socket.send_json(await queue.get())


async def _until_closed(socket: WebSocket) -> None:
    """Read (and drop) what the client sends until it closes the socket."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while (await socket.receive())["type"] != "websocket.disconnect":
            pass


@router.get("/realtime/sse", response_class=StreamingResponse)
async def realtime_sse(request: Request, user: User, gw: GatewayDep) -> StreamingResponse:
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
