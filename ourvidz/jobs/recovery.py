"""Jobs whose flow run is gone: re-queued for another attempt, up to the job's `max_attempts`.

A GPU worker that dies mid-job stops renewing its lease (`ourvidz.registry.leases`): the dispatchers
watch the leases (`recover_dead_workers`, every LEASE_CHECK_SECONDS) and crash the runs of an expired
one and re-queue their jobs, seconds after the death. Behind that, a run without heartbeats is marked
Crashed by the crash automation, and the recovery flow (every minute, and at once when a generation
run crashes or is cancelled) brings each job here with what Prefect says of its run. A
worker that hangs keeps heartbeating, so its run looks alive: the job's `progressed_at` gives it
away, and its run is marked Crashed to free its queue's slot.

A job that a worker outside Prefect runs (it reported it processing: `ourvidz.jobs.callbacks`) has
no flow run; its runner's lease, renewed by each report, stands in for one, and a job whose runner
went silent is recovered the same way, seconds after its lease expired. So is a processing job with
neither a run nor a runner (nothing would ever move it). Queued jobs left without a run are the
dispatcher's: the recovery flow nudges the dispatchers and reports them.

Recovery only re-queues: the job loses its run link and the dispatcher gives it a new one. Every
recovery is recorded in `metadata.recoveries`, whose length also makes the next dispatch's
idempotency key new (the lost run is not returned again). A job out of attempts fails with
`WORKER_LOST`; a job whose run was cancelled in Prefect (or that was asked to stop) is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.db.models import Job
from ourvidz.db.types import utcnow
from ourvidz.job_status import JobStatus
from ourvidz.jobs.cancel import CANCEL_REQUESTED
from ourvidz.jobs.conclude import conclude
from ourvidz.jobs.errors import WORKER_LOST, Failure
from ourvidz.jobs.lifecycle import Announcer, Move, default_announcer, move
from ourvidz.jobs.wake import wake_dispatchers
from ourvidz.orchestration.runs import FlowRuns, PrefectUnavailable, RunState, RunView
from ourvidz.registry.leases import Lease, take_expired

logger = logging.getLogger(__name__)
CHECK_BATCH = 500
LEASE_CHECK_SECONDS = 2.0
SETTLE = timedelta(seconds=30)  # a run younger than this may not be readable in Prefect yet
PENDING_LIMIT = timedelta(minutes=10)
UNDISPATCHED_LIMIT = timedelta(minutes=1)  # a queued job without a run this long: the dispatchers lag
HUNG = "its worker hung"
CANCELLED_IN_PREFECT = "its flow run was cancelled in Prefect"
LOST_STATES = {
    RunState.CRASHED: "its flow run crashed (worker lost)",
    RunState.FAILED: "its flow run failed before finishing the job",
    RunState.COMPLETED: "its flow run ended without finishing the job",
}


class RunFate(StrEnum):
    """What became of a job's flow run, as far as recovery cares."""

    ALIVE = "alive"  # scheduled, pending, running, paused, cancelling: leave the job alone
    LOST = "lost"  # crashed, failed without finishing the job, or missing from Prefect
    HUNG = "hung"  # looks alive (heartbeats) but its job made no progress for too long: recovered as lost
    CANCELLED = "cancelled"  # cancelled in Prefect (an operator): the job is cancelled too


@dataclass(frozen=True, slots=True)
class Watched:
    """A job that has a flow run and is not final. `silent_since` is when a processing job last showed
    progress (None while queued)."""

    job_id: uuid.UUID
    job_type: str
    flow_run_id: uuid.UUID
    created_at: datetime
    silent_since: datetime | None = None

    def silent_for(self, now: datetime) -> timedelta:
        return timedelta(0) if self.silent_since is None else now - self.silent_since


Outcome = Literal["requeued", "failed", "cancelled", "unchanged"]


def watched_jobs(sessions: sessionmaker[Session], limit: int = CHECK_BATCH) -> list[Watched]:
    """Processing jobs, and queued jobs that already have a flow run, oldest first."""
    last_sign = case(
        (Job.status == JobStatus.PROCESSING, func.coalesce(Job.progressed_at, Job.started_at)), else_=None
    )
    query = (
        select(Job.id, Job.job_type, Job.flow_run_id, Job.created_at, last_sign)
        .where(Job.flow_run_id.is_not(None))
        .where(or_(Job.status == JobStatus.PROCESSING, Job.status == JobStatus.QUEUED))
        .order_by(Job.created_at)
        .limit(limit)
    )
    with sessions() as session:
        return [Watched(*row) for row in session.execute(query)]


def fate_of(job: Watched, run: RunView | None, now: datetime, stall: timedelta) -> tuple[RunFate, str]:
    """What a job's flow run (None: not in Prefect) means for the job."""
    if run is None:
        if now - job.created_at < SETTLE:
            return RunFate.ALIVE, ""
        return RunFate.LOST, "its flow run is missing from Prefect"
    silent = job.silent_for(now)
    if run.state is RunState.RUNNING and silent > stall:
        # the worker still heartbeats (its run looks alive) but its generation stopped moving
        return RunFate.HUNG, f"{HUNG}: no progress for {int(silent.total_seconds() // 60)} min"
    if run.state is RunState.CANCELLED:
        return RunFate.CANCELLED, CANCELLED_IN_PREFECT
    if run.state in LOST_STATES:
        return RunFate.LOST, LOST_STATES[run.state]
    if run.state is RunState.PENDING and run.since is not None and now - run.since > PENDING_LIMIT:
        # a worker took the run and died before starting it: no heartbeat ever marks it Crashed
        return RunFate.LOST, f"its flow run was taken but not started for {PENDING_LIMIT.seconds // 60} min"
    return RunFate.ALIVE, ""


def unowned(job: Job, now: datetime) -> bool:
    """A processing job without a flow run whose runner's lease expired, or that has no runner (and
    has had none for SETTLE): nothing alive will move it on."""
    if job.status is not JobStatus.PROCESSING or job.flow_run_id is not None:
        return False
    if job.runner is not None:
        return job.runner_expires_at is None or job.runner_expires_at <= now
    return (job.progressed_at or job.started_at or job.created_at) <= now - SETTLE


def recover_job(
    sessions: sessionmaker[Session],
    job_id: uuid.UUID,
    flow_run_id: uuid.UUID | None,
    fate: RunFate,
    reason: str,
    announcer: Announcer | None = None,
) -> Outcome:
    """Settle a job whose flow run `flow_run_id` met `fate` (None: a job without a run that nobody
    runs any more, see `unowned`): re-queue it (the dispatcher gives it a new run), fail it once its
    attempts are used up, or cancel it. A job that moved on meanwhile (final, on another run, its
    runner heard from again) is left alone."""
    if fate is RunFate.ALIVE:
        return "unchanged"
    announcer = announcer or default_announcer(sessions)
    ending: tuple[JobStatus, Failure | None, str | None] | None = None
    requeued: Move | None = None
    with sessions.begin() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.flow_run_id != flow_run_id or job.status.is_final:
            return "unchanged"
        if flow_run_id is None and not unowned(job, utcnow()):
            return "unchanged"
        if fate is RunFate.CANCELLED or (job.meta or {}).get(CANCEL_REQUESTED):
            ending = (JobStatus.CANCELLED, None, CANCELLED_IN_PREFECT if fate is RunFate.CANCELLED else None)
        else:
            recoveries = _record_recovery(job, flow_run_id, reason)
            # a run that dies before it starts the job uses no attempt: bound those recoveries too
            if job.attempts >= job.max_attempts or recoveries > 2 * job.max_attempts:
                message = f"{reason}; gave up after {job.attempts} of {job.max_attempts} attempts"
                ending = (JobStatus.FAILED, Failure(WORKER_LOST, message), None)
            else:
                if job.status is JobStatus.PROCESSING:
                    requeued = move(session, job, JobStatus.QUEUED)
                job.flow_run_id = job.runner = job.runner_expires_at = None
                wake_dispatchers(session)
    if ending is None:
        if requeued is not None:
            announcer(requeued)
        return "requeued"
    status, failure, note = ending
    done = conclude(
        sessions, job_id, status, failure=failure, reason=note, run_id=flow_run_id, announcer=announcer
    )
    if done is None:
        return "unchanged"
    return "cancelled" if status is JobStatus.CANCELLED else "failed"


def _record_recovery(job: Job, flow_run_id: uuid.UUID | None, reason: str) -> int:
    recoveries = [*(job.meta or {}).get("recoveries", [])]
    owner = {"flow_run_id": str(flow_run_id)} if flow_run_id else {"runner": job.runner}
    recoveries.append({
        "at": utcnow().isoformat(), **owner, "attempt": job.attempts, "status": str(job.status),
        "reason": reason,
    })  # fmt: skip
    job.meta = {**(job.meta or {}), "recoveries": recoveries}
    return len(recoveries)


async def recover_lost_jobs(
    sessions: sessionmaker[Session], runs: FlowRuns, stall: timedelta, announcer: Announcer | None = None
) -> list[dict[str, Any]]:
    """Settle every watched job whose run was lost, hung or cancelled, and every job nobody runs any
    more; report queued jobs the dispatchers left without a run; one row per job."""
    actions = await recover_unowned_jobs(sessions, announcer)
    actions += await asyncio.to_thread(nudge_undispatched, sessions)
    watched = await asyncio.to_thread(watched_jobs, sessions)
    if not watched:
        return actions
    views = await runs.views([job.flow_run_id for job in watched])
    now = utcnow()
    for job in watched:
        fate, reason = fate_of(job, views.get(job.flow_run_id), now, stall)
        if fate is RunFate.ALIVE:
            continue
        if fate is RunFate.HUNG:  # end the run, so it frees its queue's concurrency slot
            try:
                await runs.crash(job.flow_run_id, reason)
            except PrefectUnavailable:
                continue  # its run still holds the slot: try again next round
        outcome = await asyncio.to_thread(
            recover_job, sessions, job.job_id, job.flow_run_id, fate, reason, announcer
        )
        if outcome != "unchanged":
            actions.append(
                {"job_id": str(job.job_id), "job_type": job.job_type, "action": outcome, "reason": reason}
            )
    return actions


async def recover_dead_workers(
    sessions: sessionmaker[Session], runs: FlowRuns, announcer: Announcer | None = None
) -> list[dict[str, Any]]:
    """Crash the runs of every worker whose lease expired, and re-queue their jobs (or fail them once
    out of attempts); one row per job settled."""
    actions = []
    for lease in await asyncio.to_thread(take_expired, sessions):
        reason = f"its worker {lease.worker} ({lease.host}, pid {lease.pid}) stopped renewing its lease"
        for job_id, job_type, run_id in await asyncio.to_thread(_jobs_on, sessions, lease):
            try:  # first, so the run frees its queue's slot before the job's next run asks for one
                await runs.crash(run_id, reason)
            except PrefectUnavailable as exc:  # the heartbeat automation crashes it later
                logger.warning("run %s of a dead worker not marked Crashed: %s", run_id, exc)
            outcome = await asyncio.to_thread(
                recover_job, sessions, job_id, run_id, RunFate.LOST, reason, announcer
            )
            if outcome != "unchanged":
                actions.append(
                    {"job_id": str(job_id), "job_type": job_type, "action": outcome, "reason": reason}
                )
    return actions


def unowned_jobs(sessions: sessionmaker[Session], now: datetime) -> list[tuple[uuid.UUID, str, str | None]]:
    """The processing jobs `unowned` picks (id, type, runner), oldest first."""
    query = (
        select(Job.id, Job.job_type, Job.runner)
        .where(Job.status == JobStatus.PROCESSING, Job.flow_run_id.is_(None))
        .where(
            or_(
                and_(
                    Job.runner.is_not(None),
                    or_(Job.runner_expires_at.is_(None), Job.runner_expires_at <= now),
                ),
                and_(Job.runner.is_(None), func.coalesce(Job.progressed_at, Job.started_at) <= now - SETTLE),
            )
        )
        .order_by(Job.created_at)
        .limit(CHECK_BATCH)
    )
    with sessions() as session:
        return [(job_id, job_type, runner) for job_id, job_type, runner in session.execute(query)]


async def recover_unowned_jobs(
    sessions: sessionmaker[Session], announcer: Announcer | None = None
) -> list[dict[str, Any]]:
    """Re-queue (or fail, once out of attempts) every processing job nobody runs any more."""
    actions = []
    for job_id, job_type, runner in await asyncio.to_thread(unowned_jobs, sessions, utcnow()):
        reason = (
            f"its worker {runner} stopped reporting (its lease expired)"
            if runner
            else "it was processing with neither a flow run nor a worker"
        )
        outcome = await asyncio.to_thread(
            recover_job, sessions, job_id, None, RunFate.LOST, reason, announcer
        )
        if outcome != "unchanged":
            actions.append({"job_id": str(job_id), "job_type": job_type, "action": outcome, "reason": reason})
    return actions


def nudge_undispatched(sessions: sessionmaker[Session]) -> list[dict[str, Any]]:
    """Queued jobs without a flow run for UNDISPATCHED_LIMIT: the dispatchers are woken (a lost
    notification) and each job is reported; a dispatcher that is down is the self-check's to say."""
    query = (
        select(Job.id, Job.job_type)
        .where(Job.status == JobStatus.QUEUED, Job.flow_run_id.is_(None))
        .where(Job.created_at <= utcnow() - UNDISPATCHED_LIMIT)
        .order_by(Job.created_at)
        .limit(CHECK_BATCH)
    )
    with sessions.begin() as session:
        waiting = list(session.execute(query))
        if waiting:
            wake_dispatchers(session)
    reason = f"queued without a flow run for over {int(UNDISPATCHED_LIMIT.total_seconds())} s"
    return [
        {"job_id": str(job_id), "job_type": job_type, "action": "dispatchers woken", "reason": reason}
        for job_id, job_type in waiting
    ]


def _jobs_on(sessions: sessionmaker[Session], lease: Lease) -> list[tuple[uuid.UUID, str, uuid.UUID]]:
    """The unfinished jobs whose current run is one the lease held."""
    if not lease.runs:
        return []
    query = select(Job.id, Job.job_type, Job.flow_run_id).where(
        Job.flow_run_id.in_(lease.runs), Job.status.in_([JobStatus.QUEUED, JobStatus.PROCESSING])
    )
    with sessions() as session:
        return [(job_id, job_type, run_id) for job_id, job_type, run_id in session.execute(query)]


async def watch_leases(
    sessions: sessionmaker[Session], runs: FlowRuns, announcer: Announcer | None = None
) -> None:
    """`recover_dead_workers` and `recover_unowned_jobs` every LEASE_CHECK_SECONDS, forever (the
    dispatchers run it)."""
    while True:
        try:
            actions = await recover_dead_workers(sessions, runs, announcer)
            for action in actions + await recover_unowned_jobs(sessions, announcer):
                logger.warning("job %s %s: %s", action["job_id"], action["action"], action["reason"])
        except Exception as exc:  # the database went away: this loop must outlive it
            logger.warning("worker lease check failed: %s", exc)
        await asyncio.sleep(LEASE_CHECK_SECONDS)
