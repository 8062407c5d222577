"""A GPU worker that stops renewing its lease: the gateway's dispatcher crashes the runs it held and
re-queues their jobs, which get a new run at once (real Prefect server, real job database)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from prefect import get_client

from ourvidz.db.models import Job
from ourvidz.db.types import utcnow
from ourvidz.job_status import JobStatus
from ourvidz.jobs.create import JobRequest, create_job
from ourvidz.jobs.start import start_job
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


def _job_row(gateway: Gateway, job_id: uuid.UUID) -> Job:
    with gateway.sessions() as session:
        return session.get_one(Job, job_id)


def test_a_worker_that_reports_a_dispatched_job_runs_it_alone_until_it_goes_silent(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over HTTP: the callback's worker takes the job from its flow run (cancelled in Prefect, so it never
    generates it too), renews its lease with progress, and when it goes silent the job is re-queued and
    dispatched again."""
    monkeypatch.setattr(gateway.settings, "runner_lease_seconds", 3.0)
    user = gateway.user()
    job = create_job(
        gateway.sessions, JobRequest(user_id=user, job_type="sdxl_image_fast", prompt="a quay")
    ).job
    run = gateway.flow_run_of(str(job.id))
    taken = gateway.callback({"job_id": str(job.id), "worker_id": "wan-7", "status": "processing"})
    assert taken.status_code == 200, taken.text
    assert _run_state(run) in {"CANCELLING", "CANCELLED"}
    assert (_job_row(gateway, job.id).runner, _job_row(gateway, job.id).flow_run_id) == ("wan-7", None)
    other = gateway.callback({"job_id": str(job.id), "worker_id": "sdxl-2", "status": "processing"})
    assert (other.status_code, other.json()["code"]) == (409, "RUNNER_CONFLICT")
    renewed = gateway.callback(
        {"job_id": str(job.id), "worker_id": "wan-7", "status": "processing", "progress": 30}
    )
    assert renewed.status_code == 200 and renewed.json()["job"]["progress"] == 30
    silent_from = utcnow()

    def requeued() -> bool:
        row = _job_row(gateway, job.id)
        return bool((row.meta or {}).get("recoveries")) and row.flow_run_id not in (None, run)

    wait_until(requeued, timeout=30, what="the silent runner's job re-queued and dispatched again")
    assert utcnow() - silent_from < timedelta(seconds=15)  # lease (3 s) + a check (2 s) + dispatch
    row = _job_row(gateway, job.id)
    assert (row.status, row.runner, row.attempts) == (JobStatus.QUEUED, None, 1)
    assert row.meta["recoveries"][0]["runner"] == "wan-7"
    # its result, late: kept (the job ends once; its new run, when it starts, finds it final)
    files = {"imageUrls": [f"{user}/{job.id}/0.png"]}
    late = gateway.callback({"job_id": str(job.id), "worker_id": "wan-7", "status": "completed", **files})
    assert late.status_code == 200 and late.json()["job"]["status"] == "completed"


def test_a_job_generating_on_its_flow_run_is_not_taken_by_a_worker_callback(gateway: Gateway) -> None:
    user = gateway.user()
    job = create_job(
        gateway.sessions, JobRequest(user_id=user, job_type="sdxl_image_fast", prompt="a quay")
    ).job
    run = gateway.flow_run_of(str(job.id))
    start_job(gateway.sessions, job.id, run)  # what the flow's validate stage does on a GPU worker
    answer = gateway.callback({"job_id": str(job.id), "worker_id": "wan-7", "status": "processing"})
    assert (answer.status_code, answer.json()["code"]) == (409, "RUNNER_CONFLICT")
    assert (_job_row(gateway, job.id).flow_run_id, _job_row(gateway, job.id).runner) == (run, None)
    assert _run_state(run) == "SCHEDULED"
    gateway.callback({"job_id": str(job.id), "status": "failed", "error_message": "test over"})
