"""The one dispatcher: creates the flow run of every queued job that has none, so no job is lost.

A job waits in the database, queued without a flow run, until this loop hands it to the generation
deployment of its queue: when it is recorded, when recovery re-queues it, or when Prefect comes back
after an outage. The run's idempotency key is the job id (plus the recovery count, `dispatch_key`),
so two dispatchers, or a dispatch cut short and redone, give the job one run.

It runs inside the gateway process (the embedded default) and as `ourvidz dispatcher` processes;
either way it sleeps until woken (`ourvidz.jobs.wake`) or for the poll interval.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from enum import Enum
from typing import NamedTuple

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.catalog import UnknownJobType, get_job_type
from ourvidz.db.models import Job
from ourvidz.job_status import JobStatus
from ourvidz.jobs.conclude import conclude
from ourvidz.jobs.errors import Failure
from ourvidz.jobs.lifecycle import Announcer, default_announcer
from ourvidz.jobs.recovery import watch_leases
from ourvidz.jobs.wake import QueuedJobs
from ourvidz.orchestration.runs import FlowRuns, PrefectUnavailable, failing_fast

BATCH = 100  # jobs read per round
CONCURRENCY = 4  # flow runs created at once
RETRY_SECONDS = 1.0  # after a round in which Prefect or the database was away
logger = logging.getLogger(__name__)


class Undispatched(Enum):
    FAILED = "failed"  # the job can never run and was failed
    AWAY = "away"  # Prefect did not answer: the job waits for the next round


class Round(NamedTuple):
    dispatched: int  # jobs given a flow run
    away: int  # jobs Prefect did not answer for: they wait for the next round


class Waiting(NamedTuple):
    job_id: uuid.UUID
    job_type: str
    key: str  # the idempotency key of its next flow run
    user_id: uuid.UUID


def dispatch_key(job_id: uuid.UUID, meta: dict | None) -> str:
    """The idempotency key of a job's next flow run: the job id, then one more suffix per recovery."""
    recoveries = len((meta or {}).get("recoveries", []))
    return str(job_id) if recoveries == 0 else f"{job_id}:recovery-{recoveries}"


def waiting_jobs(sessions: sessionmaker[Session], limit: int = BATCH) -> list[Waiting]:
    """Queued jobs without a flow run, oldest first."""
    query = (
        select(Job.id, Job.job_type, Job.meta, Job.user_id)
        .where(Job.status == JobStatus.QUEUED, Job.flow_run_id.is_(None))
        .order_by(Job.created_at)
        .limit(limit)
    )
    with sessions() as session:
        return [
            Waiting(row.id, row.job_type, dispatch_key(row.id, row.meta), row.user_id)
            for row in session.execute(query)
        ]


class Dispatcher:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        runs: FlowRuns,
        announcer: Announcer | None = None,
        *,
        batch: int = BATCH,
    ) -> None:
        self.sessions = sessions
        self.runs = runs
        self.announcer = announcer or default_announcer(sessions)
        self.batch = batch

    async def serve(self, queued: QueuedJobs) -> None:
        """Dispatch what waits, then sleep until a job is queued (or the poll interval); forever. A round
        in which Prefect or the database was away (or too busy to answer) is tried again a second later."""
        while True:
            try:
                done = await self.dispatch_waiting()
            except Exception as exc:  # the database went away: this loop must outlive it
                logger.warning("dispatch round failed: %s", exc)
                done = None
            if done is None or done.away:
                await asyncio.sleep(RETRY_SECONDS)
            elif done.dispatched < self.batch:  # caught up
                await queued.wait()

    async def dispatch_waiting(self) -> Round:
        """One round: the flow runs of waiting jobs, a few at a time (one job that cannot be dispatched
        does not hold up the others). When a whole few failed, Prefect is away: the rest wait for the
        next round."""
        waiting = await asyncio.to_thread(waiting_jobs, self.sessions, self.batch)
        done = Round(0, 0)
        for start in range(0, len(waiting), CONCURRENCY):
            chunk = waiting[start : start + CONCURRENCY]
            runs = await asyncio.gather(*(self._create(job) for job in chunk))
            links = [
                (job.job_id, run) for job, run in zip(chunk, runs, strict=True) if isinstance(run, uuid.UUID)
            ]
            if links:
                await asyncio.to_thread(_link, self.sessions, links)
            done = Round(done.dispatched + len(links), done.away + runs.count(Undispatched.AWAY))
            if not links and done.away:
                break
        return done

    async def _create(self, job: Waiting) -> uuid.UUID | Undispatched:
        try:
            queue = get_job_type(job.job_type).queue
        except UnknownJobType as exc:  # a type that left the catalog
            failure = Failure("INVALID_JOB_TYPE", str(exc))
            await asyncio.to_thread(
                conclude,
                self.sessions,
                job.job_id,
                JobStatus.FAILED,
                failure=failure,
                announcer=self.announcer,
            )
            return Undispatched.FAILED
        try:
            return await self.runs.create_generation_run(
                job.job_id, job.job_type, queue, job.key, job.user_id
            )
        except PrefectUnavailable as exc:
            logger.warning("job %s not dispatched yet: %s", job.job_id, exc)
            return Undispatched.AWAY


def _link(sessions: sessionmaker[Session], links: Sequence[tuple[uuid.UUID, uuid.UUID]]) -> None:
    """Link each job to its new run, unless it moved on meanwhile (cancelled, or linked by another
    dispatcher to the same run)."""
    with sessions.begin() as session:
        for job_id, run_id in links:
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.QUEUED, Job.flow_run_id.is_(None))
                .values(flow_run_id=run_id)
            )


async def run_dispatcher(
    sessions: sessionmaker[Session], runs: FlowRuns, database_url: str, announcer: Announcer | None = None
) -> None:
    """The dispatcher's life: woken by every queued job, and watching the GPU workers' leases (a dead
    worker's jobs are re-queued here, and dispatched again at once), forever (cancel the task to stop
    it)."""
    # the loops retry every second themselves: a call's own back-off would hold a round for up to a
    # minute after Prefect came back
    with failing_fast():
        async with QueuedJobs(database_url) as queued, asyncio.TaskGroup() as group:
            group.create_task(watch_leases(sessions, runs, announcer))
            group.create_task(Dispatcher(sessions, runs, announcer).serve(queued))
