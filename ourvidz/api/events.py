"""The job events on Prefect's event bus, written by flows and the gateway, read by realtime clients.

An event is `ourvidz.job.<what>` (`processing`, `progress`, `completed`, `failed`, `cancelled`) about
the resource `ourvidz.job.<id>`, with the owner as related resource `ourvidz.user.<id>` (role `owner`).
"""

from __future__ import annotations

import uuid
from typing import Any

from prefect.events import Event, emit_event

JOB_EVENT_PREFIX = "ourvidz.job."
WORKER_EVENT_PREFIX = "ourvidz.worker."
STATUS_OF = {
    "processing": "processing",
    "progress": "processing",
    "completed": "completed",
    "failed": "failed",
    "cancelled": "cancelled",
}


def emit_job_event(
    what: str, job_id: uuid.UUID, user_id: uuid.UUID | None, job_type: str, payload: dict[str, Any]
) -> None:
    related = []
    if user_id is not None:
        related.append({"prefect.resource.id": f"ourvidz.user.{user_id}", "prefect.resource.role": "owner"})
    emit_event(
        event=f"{JOB_EVENT_PREFIX}{what}",
        resource={"prefect.resource.id": f"ourvidz.job.{job_id}", "prefect.resource.name": job_type},
        related=related,
        payload={"job_id": str(job_id), **payload},
    )


def owner_of(event: Event) -> uuid.UUID | None:
    for resource in event.related:
        if resource.get("prefect.resource.role") == "owner":
            try:
                return uuid.UUID(resource.id.removeprefix("ourvidz.user."))
            except ValueError:
                return None
    return None


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
    return update
