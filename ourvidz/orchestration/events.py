"""Job and worker events on Prefect's event bus: written wherever a job moves, read by realtime clients.

A job event is `ourvidz.job.<what>` (`queued`, `processing`, `progress`, `completed`, `failed`,
`cancelled`) about the resource `ourvidz.job.<id>`, with the owner as related resource
`ourvidz.user.<id>` (role `owner`). A worker event is `ourvidz.worker.health`; `ourvidz.flow-run.finished`
says a worker's run ended (about the run's `prefect.flow-run.<id>`).
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from prefect.events import Event, emit_event
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter
from prefect.events.related import tags_as_related_resources

from ourvidz.orchestration.names import OURVIDZ_TAG

JOB_EVENT_PREFIX = "ourvidz.job."
WORKER_EVENT_PREFIX = "ourvidz.worker."
RUN_FINISHED = "ourvidz.flow-run.finished"
FOREVER = datetime.timedelta(days=3650)  # an occurred filter's `until` defaults to now: set it far ahead


def emit_job_event(
    what: str, job_id: uuid.UUID, user_id: uuid.UUID | None, job_type: str, payload: dict[str, Any]
) -> None:
    """Queue the event for Prefect (sent in the background: this never waits on the network)."""
    related = []
    if user_id is not None:
        related.append({"prefect.resource.id": f"ourvidz.user.{user_id}", "prefect.resource.role": "owner"})
    emit_event(
        event=f"{JOB_EVENT_PREFIX}{what}",
        resource={"prefect.resource.id": f"ourvidz.job.{job_id}", "prefect.resource.name": job_type},
        related=related,
        payload={"job_id": str(job_id), **payload},
    )


def emit_worker_health(worker_type: str, name: str, payload: dict[str, Any]) -> None:
    emit_event(
        event=f"{WORKER_EVENT_PREFIX}health",
        resource={"prefect.resource.id": f"ourvidz.worker.{worker_type}.{name}"},
        payload=payload,
    )


def emit_run_finished(flow_run_id: uuid.UUID, name: str, tags: list[str]) -> None:
    """The worker's word that a run's engine returned, on the worker's clock (the crash automation
    expects it: a run's last heartbeat may be stamped after its final state, which the server stamps)."""
    emit_event(
        event=RUN_FINISHED,
        resource={"prefect.resource.id": f"prefect.flow-run.{flow_run_id}", "prefect.resource.name": name},
        related=tags_as_related_resources(set(tags) | {OURVIDZ_TAG}),
    )


def owner_of(event: Event) -> uuid.UUID | None:
    for resource in event.related:
        if resource.get("prefect.resource.role") == "owner":
            try:
                return uuid.UUID(resource.id.removeprefix("ourvidz.user."))
            except ValueError:
                return None
    return None


@asynccontextmanager
async def subscription(*prefixes: str) -> AsyncIterator[AsyncIterator[Event]]:
    """The events whose names start with one of `prefixes`, from now on, as they happen."""
    now = datetime.datetime.now(datetime.UTC)
    event_filter = EventFilter(
        event=EventNameFilter(prefix=list(prefixes)),
        occurred=EventOccurredFilter(since=now, until=now + FOREVER),
    )
    async with get_events_subscriber(filter=event_filter) as subscriber:
        yield subscriber
