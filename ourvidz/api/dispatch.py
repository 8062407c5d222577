"""Handing queued jobs to the generation deployment of their queue, so that no accepted job is lost.

The gateway dispatches right after it answers (`run_deployment`, `timeout=0`, the job id as the
idempotency key, so a second dispatch of the same job returns the same flow run). A job whose
dispatch failed (Prefect unreachable, deployment missing) stays queued without a flow run; the
outbox loop finds such jobs and dispatches them once Prefect answers again.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import timedelta

from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.objects import FlowRun, WorkerStatus
from prefect.deployments import run_deployment
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.catalog import get_job_type
from ourvidz.db.models import Job
from ourvidz.db.types import utcnow
from ourvidz.job_status import JobStatus

GENERATION_FLOW_NAME = "generate"
OUTBOX_INTERVAL_SECONDS = 2.0
OUTBOX_GRACE_SECONDS = 5.0  # younger jobs are still being dispatched by the request that made them
OUTBOX_BATCH = 100
POOL_REFRESH_SECONDS = 5.0
logger = logging.getLogger(__name__)


def deployment_name(queue: str) -> str:
    """The `flow/deployment` name of a queue's generation deployment."""
    return f"{GENERATION_FLOW_NAME}/{queue}"


async def dispatch_job(
    sessions: sessionmaker[Session], job_id: uuid.UUID, job_type: str, client: PrefectClient | None = None
) -> FlowRun:
    """Create the job's flow run (once) and link it from the job row."""
    queue = get_job_type(job_type).queue
    flow_run = await run_deployment(
        deployment_name(queue),
        client=client,
        parameters={"job_id": str(job_id), "job_type": job_type},
        timeout=0,
        idempotency_key=str(job_id),
        as_subflow=False,
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

    async def dispatch(self, job_id: uuid.UUID, job_type: str) -> FlowRun | None:
        """Dispatch now; on failure the job waits for the outbox loop (nothing is lost)."""
        try:
            return await dispatch_job(self.sessions, job_id, job_type, self._client)
        except Exception as exc:
            logger.warning("dispatch of job %s deferred to the outbox: %s", job_id, exc)
            return None

    async def drain_once(self) -> int:
        """Dispatch queued jobs that have no flow run yet; returns how many were dispatched."""
        pending = await asyncio.to_thread(self._undispatched)
        dispatched = 0
        for job_id, job_type in pending:
            if await self.dispatch(job_id, job_type) is None:
                break  # Prefect is still away; try again next round
            dispatched += 1
        return dispatched

    def _undispatched(self) -> list[tuple[uuid.UUID, str]]:
        cutoff = utcnow() - timedelta(seconds=self.grace_seconds)
        with self.sessions() as session:
            rows = session.execute(
                select(Job.id, Job.job_type)
                .where(Job.status == JobStatus.QUEUED, Job.flow_run_id.is_(None), Job.created_at < cutoff)
                .order_by(Job.created_at)
                .limit(OUTBOX_BATCH)
            ).all()
        return [(row.id, row.job_type) for row in rows]

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
