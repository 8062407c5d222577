"""Realtime job updates: one Prefect event subscription per gateway, fanned out to its clients.

Each client gets the spec's JobStatusUpdate for its own jobs only; admins also get WorkerHealthUpdate
messages. A client that stops reading loses its oldest updates, never the gateway's memory.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from prefect.events import Event

from ourvidz.auth import Principal
from ourvidz.orchestration.events import JOB_EVENT_PREFIX, WORKER_EVENT_PREFIX, owner_of, subscription

logger = logging.getLogger(__name__)
QUEUE_SIZE = 256
RECONNECT_SECONDS = 1.0
STATUS_OF = {  # job event -> the JobStatusUpdate's status
    "queued": "queued", "processing": "processing", "progress": "processing", "completed": "completed",
    "failed": "failed", "cancelled": "cancelled",
}  # fmt: skip


def job_status_update(event: Event) -> dict[str, Any] | None:
    """The spec's JobStatusUpdate for a job event (None for events that are not about a job's state)."""
    what = event.event.removeprefix(JOB_EVENT_PREFIX)
    if what not in STATUS_OF:
        return None
    payload = event.payload
    status = STATUS_OF[what]
    update: dict[str, Any] = {
        "jobId": payload.get("job_id"),
        "status": status,
        "progress": int(payload.get("progress", 100 if status == "completed" else 0)),
    }
    if payload.get("phase"):  # generating, or waiting_for_device with the requests ahead of it
        update["phase"] = payload["phase"]
        if payload.get("position") is not None:
            update["devicePosition"] = payload["position"]
    if status == "completed":
        assets = payload.get("assets") or []
        files = {a["type"]: f"/files/{a['bucket']}/{a['key']}" for a in reversed(assets) if "bucket" in a}
        update["result"] = {
            "imageUrl": files.get("image") or files.get("thumbnail"),
            "videoUrl": files.get("video"),
            "metadata": {"assets": assets},
        }
    if payload.get("error"):
        update["error"] = payload["error"]
    if payload.get("error_code"):
        update["errorCode"] = payload["error_code"]
    return update


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
        queues = self._users.get(principal.user_id, set())
        queues.discard(queue)
        if not queues:
            self._users.pop(principal.user_id, None)
        self._admins.discard(queue)

    @property
    def subscribers(self) -> int:
        """Connected clients now (each socket or event stream counts once)."""
        return sum(len(queues) for queues in self._users.values())

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
            try:
                async with subscription(JOB_EVENT_PREFIX, WORKER_EVENT_PREFIX) as subscriber:
                    self.ready.set()
                    async for event in subscriber:
                        self.route(event)
            except Exception as exc:
                logger.warning("realtime event subscription lost (%s); reconnecting", exc)
            self.ready.clear()
            await asyncio.sleep(RECONNECT_SECONDS)
