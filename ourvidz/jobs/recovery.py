"""Jobs whose flow run is gone: re-queued for another attempt, up to the job's `max_attempts`.

A GPU worker that dies mid-job leaves its job `processing` and its flow run without heartbeats; the
crash-recovery automation marks such runs Crashed, and the recovery flow then hands each job here
with what Prefect says about its run. A worker that hangs keeps heartbeating, so its run looks alive:
the job's `progressed_at` gives it away. Every recovery is recorded in `metadata.recoveries`, whose
length also makes the next dispatch's idempotency key new (the crashed run is not returned again).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.db.models import Job
from ourvidz.db.types import utcnow
from ourvidz.job_status import JobStatus

WORKER_LOST = "WORKER_LOST"
CHECK_BATCH = 500


class RunFate(StrEnum):
    """What became of a job's flow run, as far as recovery cares."""

    ALIVE = "alive"  # scheduled, pending, running, paused, cancelling: leave the job alone
    LOST = "lost"  # crashed, failed without finishing the job, or missing from Prefect
    HUNG = "hung"  # looks alive (heartbeats) but its job made no progress for too long: recovered as lost
    CANCELLED = "cancelled"  # cancelled in Prefect (an operator): the job is cancelled too


@dataclass(frozen=True, slots=True)
class Watched:
    """A job that has a flow run and is not final: recovery asks Prefect about `flow_run_id`.
    `silent_since` is when a processing job last showed progress (None while queued)."""

    job_id: uuid.UUID
    job_type: str
    flow_run_id: uuid.UUID
    silent_since: datetime | None = None

    def silent_for(self, now: datetime) -> timedelta:
        return timedelta(0) if self.silent_since is None else now - self.silent_since


Outcome = Literal["requeued", "failed", "cancelled", "unchanged"]


def watched_jobs(sessions: sessionmaker[Session], settle_seconds: float = 30.0) -> list[Watched]:
    """Processing jobs, and queued jobs that already have a flow run, older than `settle_seconds`
    (a run that was just created may not be visible in Prefect yet)."""
    before = utcnow() - timedelta(seconds=settle_seconds)
    last_sign = case(
        (Job.status == JobStatus.PROCESSING, func.coalesce(Job.progressed_at, Job.started_at)), else_=None
    )
    query = (
        select(Job.id, Job.job_type, Job.flow_run_id, last_sign)
        .where(Job.flow_run_id.is_not(None), Job.created_at < before)
        .where(or_(Job.status == JobStatus.PROCESSING, Job.status == JobStatus.QUEUED))
        .order_by(Job.created_at)
        .limit(CHECK_BATCH)
    )
    with sessions() as session:
        return [Watched(*row) for row in session.execute(query)]


def recover_job(
    sessions: sessionmaker[Session], job_id: uuid.UUID, flow_run_id: uuid.UUID, fate: RunFate, reason: str
) -> Outcome:
    """Settle a job whose flow run `flow_run_id` met `fate`: re-queue it (without a flow run, so it is
    dispatched again), fail it once its attempts are used up, or cancel it. A job that moved on
    meanwhile (finished, or already on another run) is left alone."""
    if fate is RunFate.ALIVE:
        return "unchanged"
    with sessions.begin() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.flow_run_id != flow_run_id or job.status.is_final:
            return "unchanged"
        if fate is RunFate.CANCELLED:
            job.transition_to(JobStatus.CANCELLED, error="the flow run was cancelled in Prefect")
            return "cancelled"
        recoveries = [*(job.meta or {}).get("recoveries", [])]
        recoveries.append({
            "at": utcnow().isoformat(), "flow_run_id": str(flow_run_id), "attempt": job.attempts,
            "status": str(job.status), "reason": reason,
        })  # fmt: skip
        job.meta = {**(job.meta or {}), "recoveries": recoveries}
        # a run that dies before it starts the job uses no attempt: bound those recoveries too
        used_up = job.attempts >= job.max_attempts or len(recoveries) > 2 * job.max_attempts
        if used_up:
            job.transition_to(
                JobStatus.FAILED,
                error=f"{WORKER_LOST}: {reason}; gave up after {job.attempts} of {job.max_attempts} attempts",
            )
            return "failed"
        if job.status is JobStatus.PROCESSING:
            job.transition_to(JobStatus.QUEUED)
        job.flow_run_id = None
        return "requeued"


def undispatched_jobs(
    sessions: sessionmaker[Session], older_than_seconds: float, limit: int
) -> list[tuple[uuid.UUID, str, str]]:
    """Queued jobs without a flow run, recorded more than `older_than_seconds` ago, oldest first: each
    as (job id, job type, the idempotency key of its next dispatch)."""
    cutoff = utcnow() - timedelta(seconds=older_than_seconds)
    query = (
        select(Job.id, Job.job_type, Job.meta)
        .where(Job.status == JobStatus.QUEUED, Job.flow_run_id.is_(None), Job.created_at < cutoff)
        .order_by(Job.created_at)
        .limit(limit)
    )
    with sessions() as session:
        return [(row.id, row.job_type, dispatch_key(row.id, row.meta)) for row in session.execute(query)]


def dispatch_key(job_id: uuid.UUID, meta: dict | None) -> str:
    """The idempotency key of a job's next flow run: the job id, then one more suffix per recovery."""
    recoveries = len((meta or {}).get("recoveries", []))
    return str(job_id) if recoveries == 0 else f"{job_id}:recovery-{recoveries}"
