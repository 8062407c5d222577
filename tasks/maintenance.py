"""Maintenance tasks: crash recovery of jobs, worker health, the daily report. Each reads Prefect where
it must and leaves the decisions to the core (`ourvidz.jobs.recovery`, `ourvidz.worker_health`,
`ourvidz.reports`)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateName,
)
from prefect.client.schemas.objects import FlowRun, StateType, WorkerStatus
from prefect.events import emit_event
from prefect.states import Crashed

from ourvidz.api.dispatch import dispatch_job
from ourvidz.api.events import WORKER_EVENT_PREFIX
from ourvidz.config import get_settings
from ourvidz.db.models import Job
from ourvidz.db.session import sessions_for
from ourvidz.jobs.recovery import (
    RunFate,
    Watched,
    dispatch_key,
    recover_job,
    undispatched_jobs,
    watched_jobs,
)
from ourvidz.reports import usage_report
from ourvidz.worker_health import Observation, probe_http_workers, record_observations
from tasks.retry import database_unreachable
from tasks.stages import DB_RETRIES

PENDING_LIMIT = timedelta(minutes=10)
STRANDED_AFTER = timedelta(minutes=2)  # a queued job no dispatcher took (none running, or it died)
STRANDED_BATCH = 100
HUNG = "its worker hung"
RUNS_PER_READ = 200
LOST_STATES = {
    StateType.CRASHED: "its flow run crashed (worker lost)",
    StateType.FAILED: "its flow run failed before finishing the job",
    StateType.COMPLETED: "its flow run ended without finishing the job",
}


def fate_of(
    run: FlowRun | None, now: datetime, silent_for: timedelta = timedelta(0), stall: timedelta = timedelta.max
) -> tuple[RunFate, str]:
    """What a job's flow run (None: not in Prefect) means for the job, which has shown no progress for
    `silent_for`."""
    if run is None:
        return RunFate.LOST, "its flow run is missing from Prefect"
    state = run.state.type if run.state is not None else None
    if state is StateType.RUNNING and silent_for > stall:
        # the worker still heartbeats (its run looks alive) but its generation stopped moving
        return RunFate.HUNG, f"{HUNG}: no progress for {int(silent_for.total_seconds() // 60)} min"
    if state is StateType.CANCELLED:
        return RunFate.CANCELLED, "its flow run was cancelled"
    if state in LOST_STATES:
        return RunFate.LOST, LOST_STATES[state]
    since = run.state.timestamp if run.state is not None else None
    if state is StateType.PENDING and since is not None and now - since > PENDING_LIMIT:
        # a worker took the run and died before starting it: no heartbeat ever marks it Crashed
        return RunFate.LOST, f"its flow run was taken but not started for {PENDING_LIMIT.seconds // 60} min"
    return RunFate.ALIVE, ""


@task(name="recover-lost-jobs", cache_policy=NO_CACHE, retry_condition_fn=database_unreachable, **DB_RETRIES)
async def recover_lost_jobs() -> list[dict[str, Any]]:
    """Re-queue (and dispatch again) or fail every job whose flow run was lost, and dispatch queued jobs
    that no dispatcher took; one row per action."""
    sessions = sessions_for(get_settings().database_url)
    watched = await asyncio.to_thread(watched_jobs, sessions)
    stranded = await asyncio.to_thread(
        undispatched_jobs, sessions, STRANDED_AFTER.total_seconds(), STRANDED_BATCH
    )
    if not watched and not stranded:
        return []
    async with get_client() as client:
        runs: dict[uuid.UUID, FlowRun] = {}
        ids = [w.flow_run_id for w in watched]
        for start in range(0, len(ids), RUNS_PER_READ):  # the API answers at most this many per call
            chunk = FlowRunFilter(id=FlowRunFilterId(any_=ids[start : start + RUNS_PER_READ]))
            runs |= {
                run.id: run for run in await client.read_flow_runs(flow_run_filter=chunk, limit=RUNS_PER_READ)
            }
        now = datetime.now(UTC)
        stall = timedelta(minutes=get_settings().stall_minutes)
        actions = [
            await _settle(
                client, sessions, job, fate_of(runs.get(job.flow_run_id), now, job.silent_for(now), stall)
            )
            for job in watched
        ]
        actions += [await _dispatch_stranded(client, sessions, *job) for job in stranded]
    return [action for action in actions if action is not None]


async def _dispatch_stranded(
    client: PrefectClient, sessions: Any, job_id: uuid.UUID, job_type: str, key: str
) -> dict[str, Any]:
    reason = f"queued without a flow run for {STRANDED_AFTER.seconds // 60} min (no dispatcher took it)"
    action = {"job_id": str(job_id), "job_type": job_type, "action": "dispatched", "reason": reason}
    try:
        run = await dispatch_job(sessions, job_id, job_type, client, idempotency_key=key)
    except Exception as exc:  # Prefect is away: the next round tries again
        action["new_flow_run_id"] = f"not yet ({type(exc).__name__})"
    else:
        action["new_flow_run_id"] = str(run.id)
    return action


async def _settle(
    client: PrefectClient, sessions: Any, job: Watched, verdict: tuple[RunFate, str]
) -> dict[str, Any] | None:
    fate, reason = verdict
    if fate is RunFate.HUNG:  # end the run, so it frees its queue's concurrency slot
        await client.set_flow_run_state(job.flow_run_id, Crashed(message=reason), force=True)
    outcome = await asyncio.to_thread(recover_job, sessions, job.job_id, job.flow_run_id, fate, reason)
    if outcome == "unchanged":
        return None
    action = {"job_id": str(job.job_id), "job_type": job.job_type, "action": outcome, "reason": reason}
    if outcome == "requeued":
        key = dispatch_key(job.job_id, await asyncio.to_thread(_job_meta, sessions, job.job_id))
        try:
            run = await dispatch_job(sessions, job.job_id, job.job_type, client, idempotency_key=key)
        except Exception as exc:  # still queued without a run: the outbox (gateway or dispatcher) takes it
            action["new_flow_run_id"] = f"deferred to the outbox ({type(exc).__name__})"
        else:
            action["new_flow_run_id"] = str(run.id)
    return action


def _job_meta(sessions: Any, job_id: Any) -> dict[str, Any]:
    with sessions() as session:
        return dict(session.get_one(Job, job_id).meta or {})


@task(name="check-workers", cache_policy=NO_CACHE, retry_condition_fn=database_unreachable, **DB_RETRIES)
async def check_workers() -> list[dict[str, Any]]:
    """Observe every worker: the GPU pool's workers and late runs from Prefect, then a probe of each
    registered status endpoint and of the chat worker; record the rows and emit WorkerHealthUpdates."""
    settings = get_settings()
    sessions = sessions_for(settings.database_url)
    async with get_client() as client:
        observations = await _prefect_observations(client, settings.work_pool)
    observations += await asyncio.to_thread(probe_http_workers, sessions)
    await asyncio.to_thread(record_observations, sessions, observations)
    for observation in observations:
        name = observation.worker_name or observation.worker_type
        emit_event(
            event=f"{WORKER_EVENT_PREFIX}health",
            resource={"prefect.resource.id": f"ourvidz.worker.{observation.worker_type}.{name}"},
            payload=observation.as_event(),
        )
    return [observation.as_event() for observation in observations]


async def _prefect_observations(client: PrefectClient, pool: str) -> list[Observation]:
    """Each worker of the GPU pool as Prefect sees it, and the pool's late runs (runs no worker took)."""
    workers = await client.read_workers_for_work_pool(pool)
    late = await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Late"]))),
        limit=200,
    )
    late_here = sum(1 for run in late if run.work_pool_name == pool)
    kind = f"prefect:{pool}"[:16]  # the worker as Prefect sees it; its status endpoint's rows say `<pool>`
    observations = []
    for worker in workers:
        online = worker.status == WorkerStatus.ONLINE
        beat = worker.last_heartbeat_time
        error = None if online else f"offline since its heartbeat at {beat.isoformat() if beat else 'never'}"
        observations.append(
            Observation(
                worker_type=kind,
                worker_name=worker.name,
                status="healthy" if online else "offline",
                error=error,
            )
        )
    if late_here:
        observations.append(Observation(
            worker_type=kind, worker_name=None, status="unhealthy",
            error=f"{late_here} late flow run(s): no worker took them on time",
        ))  # fmt: skip
    return observations


@task(name="usage-report", cache_policy=NO_CACHE, retry_condition_fn=database_unreachable, **DB_RETRIES)
def report_usage(hours: int) -> dict[str, Any]:
    return usage_report(sessions_for(get_settings().database_url), hours)
