"""A GPU worker that stops renewing its lease: the gateway's dispatcher crashes the runs it held and
re-queues their jobs, which get a new run at once (real Prefect server, real job database)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from prefect import get_client

from ourvidz.db.models import Job
from ourvidz.db.types import utcnow
from ourvidz.job_status import JobStatus
from ourvidz.jobs.create import JobRequest, create_job
from ourvidz.registry.leases import give_up, leases, renew
from tests.gateway.conftest import Gateway
from tests.waiting import wait_until


def _run_state(run_id: uuid.UUID) -> str | None:
    async def read() -> str | None:
        async with get_client() as client:
            run = await client.read_flow_run(run_id)
        return None if run.state is None else run.state.type.value

    return asyncio.run(read())


def test_the_runs_of_a_worker_whose_lease_expired_are_crashed_and_their_jobs_requeued(
    gateway: Gateway,
) -> None:
    user = gateway.user()
    job = create_job(
        gateway.sessions, JobRequest(user_id=user, job_type="sdxl_image_fast", prompt="a quay")
    ).job
    run = gateway.flow_run_of(str(job.id))
    alive, dead = uuid.uuid4(), uuid.uuid4()
    renew(gateway.sessions, alive, worker="alive", pool="gpu", runs=[uuid.uuid4()], seconds=60)
    renew(gateway.sessions, dead, worker="gone", pool="gpu", runs=[run], seconds=3)  # then it died
    started = utcnow()

    def requeued() -> bool:
        with gateway.sessions() as session:
            row = session.get_one(Job, job.id)
            return bool((row.meta or {}).get("recoveries")) and row.flow_run_id not in (None, run)

    wait_until(requeued, timeout=30, what="the job re-queued with a new run")
    assert utcnow() - started < timedelta(seconds=15)  # lease (3 s) + a check (2 s) + dispatch
    with gateway.sessions() as session:
        row = session.get_one(Job, job.id)
    assert row.status is JobStatus.QUEUED
    assert "its worker gone" in row.meta["recoveries"][0]["reason"]
    assert "stopped renewing its lease" in row.meta["recoveries"][0]["reason"]
    assert _run_state(run) == "CRASHED"
    assert [lease.worker for lease in leases(gateway.sessions)] == ["alive"]  # a live lease is left alone
    give_up(gateway.sessions, alive)
