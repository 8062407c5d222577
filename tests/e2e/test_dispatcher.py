"""The one dispatcher, outside the gateway: `ourvidz dispatcher` processes create the flow runs of jobs
that gateways with OURVIDZ_GATEWAY_DISPATCHES=false only record; a job committed by another process
wakes them (PostgreSQL NOTIFY), a rolled-back one does not; and with no dispatcher at all, the
self-check says so."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import text

from ourvidz.db import migrate
from ourvidz.db.session import sessions_for
from ourvidz.db.types import utcnow
from ourvidz.jobs.create import JobRequest, add_job, ensure_profile
from ourvidz.jobs.wake import QueuedJobs
from ourvidz.stack import Stack
from tests.e2e.conftest import OURVIDZ, Orchestra, extra_gateway
from tests.waiting import flow_run_of

SMALL = {"width": 64, "height": 64, "steps": 2}
NOT_DISPATCHING = {"OURVIDZ_GATEWAY_DISPATCHES": "false"}


@pytest.fixture(params=["sqlite", "postgresql"])
def job_database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated job database of the test's own, so the session's gateway cannot step in."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('dispatch') / 'jobs.db'}"
        migrate.upgrade(url)
        return url
    return request.getfixturevalue("private_database")


def test_a_dispatcher_process_serves_gateways_that_only_record(
    orchestra: Orchestra, job_database: str
) -> None:
    sessions = sessions_for(job_database)
    user = uuid.uuid4()
    ensure_profile(sessions, user)
    headers = orchestra.headers(user)
    with extra_gateway(
        orchestra, "gateway-recording", orchestra.api_url, job_database, NOT_DISPATCHING
    ) as gateway:
        body = {"jobType": "sdxl_image_fast", "prompt": "first", "metadata": SMALL}
        first = httpx.post(f"{gateway}/queue-job", json=body, headers=headers, timeout=30)
        assert first.status_code == 201, first.text
        first_id = uuid.UUID(first.json()["job"]["id"])
        assert flow_run_of(sessions, first_id, timeout=2) is None  # recorded, not dispatched

        dispatcher = Stack(orchestra.settings.data_dir, env={**orchestra.stack.env})
        dispatcher.env["OURVIDZ_DATABASE_URL"] = job_database
        try:
            process = dispatcher.start("dispatcher", [*OURVIDZ, "dispatcher"])
            first_run = flow_run_of(sessions, first_id, timeout=60)  # the backlog, at start
            second = httpx.post(
                f"{gateway}/queue-job", json={**body, "prompt": "second"}, headers=headers, timeout=30
            )
            second_id = uuid.UUID(second.json()["job"]["id"])
            second_run = flow_run_of(sessions, second_id, timeout=60)  # a job recorded meanwhile
            assert process.poll() is None
        finally:
            dispatcher.stop()
    assert first_run is not None and second_run is not None and first_run != second_run
    with orchestra.client() as client:
        assert client.read_flow_run(first_run).idempotency_key == str(first_id)
        assert client.read_flow_run(second_run).parameters["job_id"] == str(second_id)


RECORD = """
import sys, uuid
from ourvidz.db.session import sessions_for
from ourvidz.jobs.create import JobRequest, add_job
sessions = sessions_for(sys.argv[1])
with sessions() as session:
    add_job(session, JobRequest(user_id=uuid.UUID(sys.argv[2]), job_type="sdxl_image_fast", prompt="x"))
    session.commit() if sys.argv[3] == "commit" else session.rollback()
"""


@pytest.mark.postgres
def test_postgres_wakes_dispatchers_of_other_processes_when_a_job_commits(private_database: str) -> None:
    """Woken by the job's transaction committing in another process, not by its being recorded: a
    rolled-back job wakes nobody. Jobs of other schemas on the same server (parallel test runs) notify
    too, and are ignored."""
    sessions = sessions_for(private_database)
    user = uuid.uuid4()
    ensure_profile(sessions, user)

    def record(ending: str) -> None:
        subprocess.run(
            [sys.executable, "-c", RECORD, private_database, str(user), ending], check=True, timeout=60
        )

    async def scenario() -> tuple[bool, bool]:
        async with QueuedJobs(private_database) as queued:
            assert queued.listening.is_set()
            await asyncio.to_thread(record, "rollback")
            after_rollback = await queued.wait()
            await asyncio.to_thread(record, "commit")
            after_commit = await queued.wait()
        return after_rollback, after_commit

    assert asyncio.run(scenario()) == (False, True)


def test_the_listener_is_back_within_seconds_after_its_connection_is_cut(private_database: str) -> None:
    """Its server process terminated (as a database restart does): the dispatcher listens again within
    seconds, and a job committed then wakes it."""
    sessions = sessions_for(private_database)
    user = uuid.uuid4()
    ensure_profile(sessions, user)

    def terminate(pid: int) -> None:
        with sessions.begin() as session:
            assert session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()

    async def scenario() -> tuple[float, bool]:
        async with QueuedJobs(private_database) as queued:
            first = queued.backend_pid
            assert first is not None and queued.listening.is_set()
            await asyncio.to_thread(terminate, first)
            cut = time.monotonic()
            while queued.backend_pid in (None, first) or not queued.listening.is_set():
                assert time.monotonic() - cut < 30, "the listener did not come back"
                await asyncio.sleep(0.05)
            back = time.monotonic() - cut
            await queued.wait()  # the wake-up of coming back (a job may have been queued meanwhile)
            with sessions.begin() as session:
                add_job(session, JobRequest(user_id=user, job_type="sdxl_image_fast", prompt="after the cut"))
            return back, await queued.wait()

    back, woken = asyncio.run(scenario())
    assert woken and back < 10


def test_a_job_recorded_in_this_process_wakes_its_dispatcher_at_commit(job_database: str) -> None:
    sessions = sessions_for(job_database)
    user = uuid.uuid4()
    ensure_profile(sessions, user)

    async def scenario() -> tuple[bool, bool]:
        async with QueuedJobs(job_database) as queued:
            with sessions() as session:
                add_job(session, JobRequest(user_id=user, job_type="sdxl_image_fast", prompt="rolled back"))
                session.rollback()
            rolled_back = await queued.wait()  # returns after the poll interval: nothing woke it
            with sessions.begin() as session:
                add_job(session, JobRequest(user_id=user, job_type="sdxl_image_fast", prompt="kept"))
            return rolled_back, await queued.wait()

    assert asyncio.run(scenario()) == (False, True)


def test_the_self_check_fails_when_nothing_dispatches(orchestra: Orchestra, private_database: str) -> None:
    """A gateway that only records, and no dispatcher: a job waiting over a minute fails `dispatch`."""
    sessions = sessions_for(private_database)
    user = uuid.uuid4()
    ensure_profile(sessions, user)
    name = "gateway-no-dispatcher"
    with extra_gateway(orchestra, name, orchestra.api_url, private_database, NOT_DISPATCHING) as gateway:
        admin = orchestra.headers(uuid.uuid4(), admin=True)
        before = httpx.get(f"{gateway}/test-edge-functions", headers=admin, timeout=30).json()
        with sessions.begin() as session:
            request = JobRequest(user_id=user, job_type="image_fast", prompt="stuck", metadata=SMALL)
            job = add_job(session, request).job
            job.created_at = utcnow() - timedelta(minutes=2)
        after = httpx.get(f"{gateway}/test-edge-functions", headers=admin, timeout=30).json()
    assert before["checks"]["dispatch"]["ok"] is True
    check = after["checks"]["dispatch"]
    assert check["ok"] is False and "ourvidz dispatcher" in check["detail"] and after["success"] is False
