"""Realtime job updates over a WebSocket or Server-Sent Events, from the gateway's event hub.

Clients connect with a WebSocket (`/realtime?access_token=<jwt>`) or, where WebSockets are blocked,
Server-Sent Events (`/realtime/sse`, bearer token). Each gets the spec's JobStatusUpdate for its own
jobs only; admins also get WorkerHealthUpdate messages.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

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
    try:
        while True:
            await socket.send_json(await queue.get())
    except WebSocketDisconnect:
        pass
    finally:
        hub.disconnect(principal, queue)


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
