"""A live check of everything the gateway depends on (`GET /test-edge-functions`), each part timed.

Every check either answers a line of detail or raises with what an operator should look at; none may
take longer than CHECK_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.catalog import JOB_TYPES
from ourvidz.db.models import Job
from ourvidz.db.types import utcnow
from ourvidz.egress import EgressPolicy
from ourvidz.job_status import JobStatus
from ourvidz.orchestration.runs import FlowRuns
from ourvidz.registry.probes import probe
from ourvidz.registry.workers import CHAT, record_probe, registration
from ourvidz.storage import Storage

CHECK_TIMEOUT_SECONDS = 5.0
DISPATCH_STALL = timedelta(seconds=60)
QUEUES = sorted({job_type.queue for job_type in JOB_TYPES.values()})


@dataclass(frozen=True, slots=True)
class Check:
    ok: bool
    seconds: float
    detail: str


async def self_check(
    sessions: sessionmaker[Session], storage: Storage, runs: FlowRuns, pool: str, worker_egress: EgressPolicy
) -> dict[str, Check]:
    return {
        "database": await _timed(asyncio.to_thread(_database, sessions)),
        "storage": await _timed(asyncio.to_thread(_storage, storage)),
        "prefect_api": await _timed(_prefect_api(runs)),
        "deployments": await _timed(_deployments(runs)),
        "work_pool": await _timed(_work_pool(runs, pool)),
        "chat_worker": await _timed(asyncio.to_thread(_chat_worker, sessions, worker_egress)),
        "dispatch": await _timed(asyncio.to_thread(_dispatch, sessions)),
    }


async def _timed(call: Awaitable[str]) -> Check:
    started = time.perf_counter()
    try:
        detail = await asyncio.wait_for(call, CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        return Check(False, time.perf_counter() - started, "no answer in time")
    except Exception as exc:
        return Check(False, time.perf_counter() - started, f"{type(exc).__name__}: {exc}")
    return Check(True, time.perf_counter() - started, detail)


def _database(sessions: sessionmaker[Session]) -> str:
    with sessions() as session:
        session.execute(text("SELECT 1"))
    return "reachable"


def _storage(storage: Storage) -> str:
    key = f"self-check/{uuid.uuid4()}.txt"
    storage.put("system", key, b"ok")
    try:
        if storage.get("system", key) != b"ok":
            raise RuntimeError("read back different bytes")
    finally:
        storage.delete("system", key)
    return f"write, read and delete under {storage.url}"


async def _prefect_api(runs: FlowRuns) -> str:
    await runs.healthcheck()
    return "healthy"


async def _deployments(runs: FlowRuns) -> str:
    return ", ".join(await runs.check_deployments(QUEUES))


async def _work_pool(runs: FlowRuns, pool: str) -> str:
    online = [worker.name for worker in await runs.workers(pool) if worker.online]
    if not online:
        raise RuntimeError(f"no worker of pool {pool!r} is online")
    return f"{len(online)} worker(s) online in {pool!r}"


def _dispatch(sessions: sessionmaker[Session]) -> str:
    """Jobs get their flow run within seconds; a backlog this old means nothing dispatches."""
    cutoff = utcnow() - DISPATCH_STALL
    query = select(func.count()).where(
        Job.status == JobStatus.QUEUED, Job.flow_run_id.is_(None), Job.created_at < cutoff
    )
    with sessions() as session:
        stalled = int(session.scalar(query) or 0)
    seconds = int(DISPATCH_STALL.total_seconds())
    if stalled:
        raise RuntimeError(
            f"{stalled} job(s) queued without a flow run for over {seconds} s: is a dispatcher running "
            "(the gateway's, or `ourvidz dispatcher`) and Prefect reachable?"
        )
    return f"no job waits over {seconds} s for its flow run"


def _chat_worker(sessions: sessionmaker[Session], egress: EgressPolicy) -> str:
    worker = registration(sessions, CHAT)
    if worker is None:
        raise RuntimeError("no chat worker is registered")
    health = probe(worker.url, egress)
    record_probe(sessions, CHAT, "", worker.url, health)
    if not health.healthy:
        raise RuntimeError(f"{worker.url} is unhealthy: {health.error}")
    return f"{worker.url} answered in {health.seconds * 1000:.0f} ms"
