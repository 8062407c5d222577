"""Job events on Prefect's event bus: `ourvidz.job.<what>` about resource `ourvidz.job.<id>`.

The gateway's realtime feed, automations and the UI's event feed all read these.
"""

from __future__ import annotations

import uuid
from typing import Any

from prefect.events import emit_event


def job_resource(job_id: uuid.UUID, job_type: str) -> dict[str, str]:
    return {"prefect.resource.id": f"ourvidz.job.{job_id}", "prefect.resource.name": job_type}


def emit_job_event(
    what: str, job_id: uuid.UUID, user_id: uuid.UUID | None, job_type: str, payload: dict[str, Any]
) -> None:
    related = (
        []
        if user_id is None
        else [{"prefect.resource.id": f"ourvidz.user.{user_id}", "prefect.resource.role": "owner"}]
    )
    emit_event(
        event=f"ourvidz.job.{what}",
        resource=job_resource(job_id, job_type),
        related=related,
        payload={"job_id": str(job_id), **payload},
    )
