"""Handing queued jobs to the generation deployment of their queue, so that no accepted job is lost.

The gateway dispatches right after it answers (what `run_deployment(timeout=0)` does, with the job id
as the idempotency key, so a second dispatch of the same job returns the same flow run; the gateway
keeps each queue's deployment id instead of reading the deployment again for every job, and bounds
how many dispatches are in flight so a burst of jobs cannot starve the requests themselves). A job whose
dispatch failed (Prefect unreachable, deployment missing) stays queued without a flow run; the
outbox loop finds such jobs and dispatches them once Prefect answers again.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from contextlib import AsyncExitStack
from datetime import timedelta

from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.objects import FlowRun, WorkerStatus
from prefect.exceptions import ObjectNotFound
from prefect.states import Scheduled
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.catalog import get_job_type
from ourvidz.db.models import Job
from ourvidz.db.types import utcnow
from ourvidz.job_status import JobStatus
from ourvidz.jobs.recovery import dispatch_key

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
    """The gateway's dispatcher: one long-lived Prefect client, the outbox loop, and whether the GPU
    pool has an online worker (refreshed in the background, so requests never wait for it)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        work_pool: str,
        interval: float = OUTBOX_INTERVAL_SECONDS,
        grace_seconds: float = OUTBOX_GRACE_SECONDS,
    ) -> None:
        self.sessions = sessions
        self.work_pool = work_pool
        self.interval = interval
        self.grace_seconds = grace_seconds
        self.workers_online: bool | None = None
        self._online_checked = time.monotonic()
        self._client: PrefectClient | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._deployments: dict[str, uuid.UUID] = {}
        self._pending: set[uuid.UUID] = set()  # being dispatched now: the outbox leaves them alone
        self._slots = asyncio.Semaphore(DISPATCH_CONCURRENCY)

    async def start(self) -> None:
        self._client = get_client()
        await self._client.__aenter__()
        self._loops = [asyncio.create_task(self._outbox_loop()), asyncio.create_task(self._pool_loop())]

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

    async def drain_once(self) -> int:
        """Dispatch queued jobs that have no flow run yet; returns how many were dispatched."""
        pending = await asyncio.to_thread(self._undispatched)
        dispatched = 0
        for job_id, job_type, key in pending:
            if await self.dispatch(job_id, job_type, key) is None:
                break  # Prefect is still away; try again next round
            dispatched += 1
        return dispatched

    def _undispatched(self) -> list[tuple[uuid.UUID, str, str]]:
        cutoff = utcnow() - timedelta(seconds=self.grace_seconds)
        with self.sessions() as session:
            rows = session.execute(
                select(Job.id, Job.job_type, Job.meta)
                .where(Job.status == JobStatus.QUEUED, Job.flow_run_id.is_(None), Job.created_at < cutoff)
                .order_by(Job.created_at)
                .limit(OUTBOX_BATCH)
            ).all()
        waiting = [row for row in rows if row.id not in self._pending]
        return [(row.id, row.job_type, dispatch_key(row.id, row.meta)) for row in waiting]

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
        while True:
            try:
                await self.drain_once()
            except Exception as exc:  # a database hiccup must not end the loop
                logger.warning("outbox round failed: %s", exc)
            await asyncio.sleep(self.interval)
