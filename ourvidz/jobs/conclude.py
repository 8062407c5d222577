"""Ending a job: the one way a job reaches completed, failed or cancelled, whoever ends it.

The generation flow, a cancellation, a worker's callback, crash recovery and a run cancelled in
Prefect all end jobs here. In one transaction the job gets its final status (and, when completed, its
outputs and usage row); once that has committed, the ending is announced: the
`ourvidz.job.<status>` event and the first webhook attempt. A job that is already final, or that now
belongs to another flow run than the one ending it, is left alone and nothing is announced, so each
ending is announced exactly once.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.orm import Session, sessionmaker

from ourvidz.db.models import Job
from ourvidz.job_status import JobStatus
from ourvidz.jobs.errors import Failure
from ourvidz.jobs.lifecycle import Announcer, Move, default_announcer, move
from ourvidz.jobs.outputs import Output, record_outputs
from ourvidz.webhooks import enqueue


def owned_by(job: Job, run_id: uuid.UUID | None) -> bool:
    """Whether flow run `run_id` (None: a caller outside the run, e.g. the gateway) may end the job."""
    return run_id is None or job.flow_run_id == run_id


def conclude(
    sessions: sessionmaker[Session],
    job_id: uuid.UUID,
    status: JobStatus,
    *,
    failure: Failure | None = None,
    reason: str | None = None,
    outputs: Sequence[Output] = (),
    prompt: str | None = None,
    run_id: uuid.UUID | None = None,
    announcer: Announcer | None = None,
) -> Move | None:
    """End job `job_id` with `status` and announce it; None (nothing done) if it was final already or
    belongs to another run than `run_id`. A queued job that completes (a worker outside Prefect that
    reports only its result) passes through processing, and both moves are announced."""
    assert status.is_final, f"{status} is not an ending"
    moves: list[Move] = []
    with sessions.begin() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.status.is_final or not owned_by(job, run_id):
            return None
        if status is JobStatus.COMPLETED:
            if job.status is JobStatus.QUEUED:
                moves.append(move(session, job, JobStatus.PROCESSING))
            record_outputs(session, job, outputs, prompt)
        shown = [file for output in outputs for file in output.announced()]
        ended = move(session, job, status, failure=failure, reason=reason, assets=shown)
        moves.append(ended)
        if job.webhook_url:  # queued with the ending: it is sent even if this process dies next
            enqueue(session, url=job.webhook_url, job_id=job.id, event_type=ended.webhook_event,
                    payload=ended.payload())  # fmt: skip
    (announcer or default_announcer(sessions))(*moves)
    return moves[-1]
