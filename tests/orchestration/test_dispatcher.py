"""`OURVIDZ_DISPATCH=dispatcher`: the gateway only records jobs, `ourvidz dispatcher` creates their runs."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.db import migrate
from ourvidz.db.models import Job
from ourvidz.db.session import sessions_for
from ourvidz.db.types import utcnow
from ourvidz.jobs.announce import QueuedJobs
from ourvidz.jobs.create import add_job, ensure_profile
from ourvidz.stack import Stack
from tests.orchestration.conftest import OURVIDZ, Orchestra, extra_gateway

SMALL = {"width": 64, "height": 64, "steps": 2}


@pytest.fixture(params=["sqlite", "postgresql"])
def job_database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated job database of the test's own, so the session's gateway (inline) cannot step in."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('dispatch') / 'jobs.db'}"
        migrate.upgrade(url)
        return url
    return request.getfixturevalue("private_database")


def _flow_run_of(sessions: sessionmaker[Session], job_id: uuid.UUID, timeout: float) -> uuid.UUID | None:
    deadline = time.monotonic() + timeout
    while True:
        with sessions() as session:
            flow_run_id = session.get_one(Job, job_id).flow_run_id
        if flow_run_id is not None or time.monotonic() > deadline:
            return flow_run_id
        time.sleep(0.1)


def test_a_recording_gateway_leaves_jobs_to_the_dispatcher_process(
    orchestra: Orchestra, job_database: str
) -> None:
    sessions = sessions_for(job_database)
    user = uuid.uuid4()
    ensure_profile(sessions, user)
    headers = orchestra.headers(user)
    env = {"OURVIDZ_DISPATCH": "dispatcher"}
    with extra_gateway(orchestra, "gateway-recording", orchestra.api_url, job_database, env) as gateway:
        body = {"jobType": "sdxl_image_fast", "prompt": "first", "metadata": SMALL}
        first = httpx.post(f"{gateway}/queue-job", json=body, headers=headers, timeout=30)
        assert first.status_code == 201, first.text
        first_id = uuid.UUID(first.json()["job"]["id"])
        assert _flow_run_of(sessions, first_id, timeout=2) is None  # recorded, not dispatched

        dispatcher = Stack(orchestra.settings.data_dir, env={**orchestra.stack.env, **env})
        dispatcher.env["OURVIDZ_DATABASE_URL"] = job_database
        try:
            process = dispatcher.start("dispatcher", [*OURVIDZ, "dispatcher"])
            first_run = _flow_run_of(sessions, first_id, timeout=60)  # the backlog, at start
            second = httpx.post(
                f"{gateway}/queue-job", json={**body, "prompt": "second"}, headers=headers, timeout=30
            )
            second_id = uuid.UUID(second.json()["job"]["id"])
            second_run = _flow_run_of(sessions, second_id, timeout=60)  # a job recorded meanwhile
            assert process.poll() is None
        finally:
            dispatcher.stop()
    assert first_run is not None and second_run is not None and first_run != second_run
    with orchestra.client() as client:
        assert client.read_flow_run(first_run).idempotency_key == str(first_id)
        assert client.read_flow_run(second_run).parameters["job_id"] == str(second_id)


def test_postgres_wakes_dispatchers_when_a_job_commits(private_database: str) -> None:
    """Woken by the job's transaction committing, not by recording it: a rolled-back job wakes nobody,
    and one wake-up covers every job that was there."""
    sessions = sessions_for(private_database)
    user = uuid.uuid4()
    ensure_profile(sessions, user)

    async def scenario() -> tuple[bool, bool, bool]:
        async with QueuedJobs(private_database) as queued:
            with sessions() as session:
                add_job(session, user_id=user, job_type="sdxl_image_fast", prompt="rolled back")
                session.flush()
                session.rollback()
            after_rollback = await queued.wait()
            with sessions.begin() as session:
                add_job(session, user_id=user, job_type="sdxl_image_fast", prompt="kept")
            after_commit = await queued.wait()
            nothing_more = await queued.wait()
        return after_rollback, after_commit, nothing_more

    # Jobs of other schemas on the same server (parallel test runs) notify too, and are ignored.
    assert asyncio.run(scenario()) == (False, True, False)


def test_the_self_check_fails_when_nothing_dispatches(orchestra: Orchestra, private_database: str) -> None:
    """A recording gateway with no dispatcher: a job waiting over a minute fails the `dispatch` check."""
    sessions = sessions_for(private_database)
    user = uuid.uuid4()
    ensure_profile(sessions, user)
    env = {"OURVIDZ_DISPATCH": "dispatcher"}
    name = "gateway-no-dispatcher"
    with extra_gateway(orchestra, name, orchestra.api_url, private_database, env) as gateway:
        admin = orchestra.headers(uuid.uuid4(), admin=True)
        before = httpx.get(f"{gateway}/test-edge-functions", headers=admin, timeout=30).json()
        with sessions.begin() as session:
            job = add_job(session, user_id=user, job_type="image_fast", prompt="stuck", metadata=SMALL).job
            job.created_at = utcnow() - timedelta(minutes=2)
        after = httpx.get(f"{gateway}/test-edge-functions", headers=admin, timeout=30).json()
    assert before["checks"]["dispatch"]["ok"] is True
    check = after["checks"]["dispatch"]
    assert check["ok"] is False and "ourvidz dispatcher" in check["detail"] and after["success"] is False
