"""Cancelling a job, for its owner (`POST /jobs/{id}/cancel`) or an admin.

A queued job is cancelled at once, and its flow run (if it has one yet) is told to stop: a run that
starts anyway finds the job cancelled and does nothing. A processing job is stopped through its
flow run, whose generation stops at its next step and ends the job cancelled; a processing job with
no live run (reported by a worker outside Prefect, or whose run already ended) is cancelled at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import NamedTuple

from sqlalchemy.orm import Session, sessionmaker

from ourvidz.db.models import Job
from ourvidz.db.types import utcnow
from ourvidz.job_status import JobStatus
from ourvidz.jobs.conclude import conclude
from ourvidz.jobs.errors import Conflict, OrchestratorUnavailable
from ourvidz.jobs.lifecycle import Announcer
from ourvidz.jobs.view import read_job
from ourvidz.orchestration.runs import FlowRuns, PrefectUnavailable

CANCELLED_BY_REQUEST = "cancelled on request"
CANCEL_REQUESTED = "cancel_requested_at"  # metadata key: when a running job was asked to stop


class Cancellation(NamedTuple):
    job: Job
    message: str


async def cancel_job(
    sessions: sessionmaker[Session], runs: FlowRuns, job_id: uuid.UUID, announcer: Announcer
) -> Cancellation:
    """Cancel the job now or at its next generation step; raises Conflict if it is already final and
    OrchestratorUnavailable if a running job cannot be reached through Prefect."""
    job = await asyncio.to_thread(read_job, sessions, job_id)
    if job.status is JobStatus.QUEUED:
        ended = await asyncio.to_thread(_end, sessions, job_id, announcer)
        if ended:
            if job.flow_run_id is not None:
                with contextlib.suppress(PrefectUnavailable):  # a run that starts anyway does nothing
                    await runs.cancel(job.flow_run_id, CANCELLED_BY_REQUEST)
            return Cancellation(
                await asyncio.to_thread(read_job, sessions, job_id), "job cancelled before it started"
            )
        job = await asyncio.to_thread(read_job, sessions, job_id)  # it started (or ended) meanwhile
    if job.status.is_final:
        raise Conflict(f"the job is already {job.status}", code="JOB_ALREADY_FINAL")
    live = False
    if job.flow_run_id is not None:
        await asyncio.to_thread(_note_request, sessions, job_id)
        try:
            live = await runs.cancel(job.flow_run_id, CANCELLED_BY_REQUEST)
        except PrefectUnavailable as exc:
            raise OrchestratorUnavailable("Prefect cannot be reached; retry shortly") from exc
    if live:
        return Cancellation(job, "job is cancelling; generation stops at its next step")
    if not await asyncio.to_thread(_end, sessions, job_id, announcer):
        raise Conflict("the job ended meanwhile", code="JOB_ALREADY_FINAL")
    return Cancellation(
        await asyncio.to_thread(read_job, sessions, job_id), "job cancelled (no run was generating it)"
    )


def _note_request(sessions: sessionmaker[Session], job_id: uuid.UUID) -> None:
    """Keep the request on the job: if its run is lost before it stops, recovery cancels the job
    instead of running it again."""
    with sessions.begin() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is not None and not job.status.is_final:
            job.meta = {**(job.meta or {}), CANCEL_REQUESTED: utcnow().isoformat()}


def _end(sessions: sessionmaker[Session], job_id: uuid.UUID, announcer: Announcer) -> bool:
    return conclude(sessions, job_id, JobStatus.CANCELLED, announcer=announcer) is not None
