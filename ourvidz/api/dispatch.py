"""Handing queued jobs to the generation deployment of their queue, so that no accepted job is lost.

Dispatching is `run_deployment(timeout=0)` with the job id as the idempotency key, so a second dispatch
of the same job returns the same flow run. It happens in one of two places (OURVIDZ_DISPATCH):

- `inline`: the gateway dispatches right after it answers, keeping each queue's deployment id and
  bounding how many dispatches are in flight; a job whose dispatch failed (Prefect unreachable,
  deployment missing) stays queued without a flow run, and the gateway's outbox loop dispatches it
  once Prefect answers again.
- `dispatcher`: the gateway only records jobs; `ourvidz dispatcher` processes create their flow runs,
  woken by each recorded job (`ourvidz.jobs.announce`). Each run costs the gateway about 4 ms of CPU
  inline, so on a shared machine this keeps the gateway's answers fast while a burst is dispatched,
  and the dispatcher can run at lower CPU priority. Several dispatchers may run: the idempotency key
  makes a job they both pick up one flow run.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from contextlib import AsyncExitStack

from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.objects import FlowRun, WorkerStatus
from prefect.exceptions import ObjectNotFound
from prefect.states import Scheduled
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.catalog import get_job_type
from ourvidz.config import Settings
from ourvidz.db.models import Job
from ourvidz.db.session import sessions_for
from ourvidz.jobs.announce import QueuedJobs
from ourvidz.jobs.recovery import undispatched_jobs

GENERATION_FLOW_NAME = "generate"
OUTBOX_INTERVAL_SECONDS = 2.0
OUTBOX_GRACE_SECONDS = 5.0  # younger jobs are still being dispatched by the request that made them
OUTBOX_BATCH = 100
POOL_REFRESH_SECONDS = 5.0
DISPATCH_CONCURRENCY = 4
logger = logging.getLogger(__name__)


def deployment_name(queue: str) -> str:
    """The `flow/deployment` name of a queue's generation deployment."""
    return f"{GENERATION_FLOW_NAME}/{queue}"


async def dispatch_job(
    sessions: sessionmaker[Session],
    job_id: uuid.UUID,
    job_type: str,
    client: PrefectClient | None = None,
    deployment_id: uuid.UUID | None = None,
    idempotency_key: str | None = None,
) -> FlowRun:
    """Create the job's flow run (once) on its queue's deployment and link it from the job row.

    The idempotency key is the job id (a recovered job's key adds its recovery count, see
    `ourvidz.jobs.recovery.dispatch_key`), so dispatching the same attempt twice gives one run.
    """
    async with AsyncExitStack() as stack:
        if client is None:
            client = await stack.enter_async_context(get_client())
        if deployment_id is None:
            queue = get_job_type(job_type).queue
            deployment_id = (await client.read_deployment_by_name(deployment_name(queue))).id
        flow_run = await client.create_flow_run_from_deployment(
            deployment_id,
            parameters={"job_id": str(job_id), "job_type": job_type},
            state=Scheduled(),
            idempotency_key=idempotency_key or str(job_id),
        )
    await asyncio.to_thread(_link, sessions, job_id, flow_run.id)
    return flow_run


def _link(sessions: sessionmaker[Session], job_id: uuid.UUID, flow_run_id: uuid.UUID) -> None:
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(flow_run_id=flow_run_id))


class Dispatcher:
    """One long-lived Prefect client that dispatches jobs, the gateway's outbox loop (when the gateway
    dispatches inline), and whether the GPU pool has an online worker (refreshed in the background, so
    requests never wait for it)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        work_pool: str,
        interval: float = OUTBOX_INTERVAL_SECONDS,
        grace_seconds: float = OUTBOX_GRACE_SECONDS,
        inline: bool = True,
    ) -> None:
        self.sessions = sessions
        self.work_pool = work_pool
        self.interval = interval
        self.grace_seconds = grace_seconds
        self.inline = inline  # False: the gateway leaves every job to `ourvidz dispatcher`
        self.workers_online: bool | None = None
        self._online_checked = time.monotonic()
        self._client: PrefectClient | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._deployments: dict[str, uuid.UUID] = {}
        self._pending: set[uuid.UUID] = set()  # being dispatched now: the outbox leaves them alone
        self._slots = asyncio.Semaphore(DISPATCH_CONCURRENCY)

    async def start(self, loops: bool = True) -> None:
        """Open the Prefect client; with `loops`, watch the pool (and, inline, run the outbox loop)."""
        self._client = get_client()
        await self._client.__aenter__()
        if loops:
            self._loops = [asyncio.create_task(self._pool_loop())]
            if self.inline:
                self._loops.append(asyncio.create_task(self._outbox_loop()))

    async def stop(self) -> None:
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self._client is not None:
            await self._client.__aexit__(None, None, None)

    @property
    def client(self) -> PrefectClient:
        assert self._client is not None, "dispatcher not started"
        return self._client

    async def dispatch(self, job_id: uuid.UUID, job_type: str, key: str | None = None) -> FlowRun | None:
        """Dispatch now; on failure the job waits for the outbox loop (nothing is lost)."""
        queue = get_job_type(job_type).queue
        self._pending.add(job_id)
        try:
            async with self._slots:
                if queue not in self._deployments:
                    deployment = await self.client.read_deployment_by_name(deployment_name(queue))
                    self._deployments[queue] = deployment.id
                return await dispatch_job(
                    self.sessions, job_id, job_type, self.client, self._deployments[queue], key
                )
        except Exception as exc:
            if isinstance(exc, ObjectNotFound):  # the deployment was deleted or re-created
                self._deployments.pop(queue, None)
            logger.warning("dispatch of job %s deferred to the outbox: %s", job_id, exc)
            return None
        finally:
            self._pending.discard(job_id)

    async def drain_once(self) -> int | None:
        """Dispatch queued jobs that have no flow run yet, a few at a time; returns how many were
        dispatched, or None when a whole few failed (Prefect is away: the rest wait for the next round;
        one job that cannot be dispatched does not hold up the others)."""
        pending = await asyncio.to_thread(self._undispatched)
        dispatched = 0
        for start in range(0, len(pending), DISPATCH_CONCURRENCY):
            chunk = pending[start : start + DISPATCH_CONCURRENCY]
            runs = await asyncio.gather(*(self.dispatch(*job) for job in chunk))
            if all(run is None for run in runs):
                return None
            dispatched += sum(run is not None for run in runs)
        return dispatched

    async def serve(self, queued: QueuedJobs) -> None:
        """The dispatcher process's loop: dispatch what waits, then sleep until a job is recorded."""
        while True:
            try:
                dispatched = await self.drain_once()
            except Exception as exc:  # a database hiccup must not end the loop
                logger.warning("dispatch round failed: %s", exc)
                dispatched = None
            if dispatched is None:  # Prefect or the database is away: do not spin on every new job
                await asyncio.sleep(self.interval)
            elif dispatched < OUTBOX_BATCH:  # caught up
                await queued.wait()

    def _undispatched(self) -> list[tuple[uuid.UUID, str, str]]:
        waiting = undispatched_jobs(self.sessions, self.grace_seconds, OUTBOX_BATCH)
        return [job for job in waiting if job[0] not in self._pending]

    async def refresh_workers_online(self) -> bool | None:
        try:
            workers = await self.client.read_workers_for_work_pool(self.work_pool)
        except Exception:
            self.workers_online = None  # unknown: Prefect or the pool is not there
        else:
            self.workers_online = any(worker.status == WorkerStatus.ONLINE for worker in workers)
        self._online_checked = time.monotonic()
        return self.workers_online

    @property
    def workers_online_age(self) -> float:
        """Seconds since the pool was last asked."""
        return time.monotonic() - self._online_checked

    async def _pool_loop(self) -> None:
        while True:
            await self.refresh_workers_online()
            await asyncio.sleep(POOL_REFRESH_SECONDS)

    async def _outbox_loop(self) -> None:
        """Inline mode's safety net: jobs whose dispatch after the answer failed."""
        while True:
            try:
                await self.drain_once()
            except Exception as exc:  # a database hiccup must not end the loop
                logger.warning("outbox round failed: %s", exc)
            await asyncio.sleep(self.interval)


async def run_dispatcher(settings: Settings) -> None:
    """`ourvidz dispatcher`: create the flow runs of the jobs that gateways in `dispatcher` mode record."""
    dispatcher = Dispatcher(sessions_for(settings.database_url), settings.work_pool, grace_seconds=0)
    await dispatcher.start(loops=False)
    try:
        async with QueuedJobs(settings.database_url) as queued:
            await dispatcher.serve(queued)
    finally:
        await dispatcher.stop()
