"""Workers outside Prefect as runners of a job (job-callback `processing`): the report's worker owns
the job while its lease lasts, a flow run the job had is detached, a job someone else runs is not
taken, and a job whose runner went silent (or that nobody runs) is re-queued, then failed once out
of attempts. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.db.models import Job
from ourvidz.db.types import utcnow
from ourvidz.job_status import JobStatus
from ourvidz.jobs.callbacks import RUNNER_CONFLICT, UNNAMED, WorkerReport, apply_report
from ourvidz.jobs.create import JobRequest, create_job, ensure_profile
from ourvidz.jobs.dispatch import waiting_jobs
from ourvidz.jobs.errors import WORKER_LOST, Conflict
from ourvidz.jobs.lifecycle import Announcer
from ourvidz.jobs.recovery import RunFate, nudge_undispatched, recover_job, recover_unowned_jobs
from ourvidz.jobs.start import JobNotRunnable, start_job
from tests.unit.conftest import Emitted

LEASE = timedelta(minutes=5)
GONE = timedelta(0)  # a lease that has already run out when the report is applied


def _job(sessions: sessionmaker[Session], run: uuid.UUID | None = None) -> uuid.UUID:
    user = uuid.uuid4()
    ensure_profile(sessions, user)
    job_id = create_job(
        sessions, JobRequest(user_id=user, job_type="sdxl_image_fast", prompt="a quay")
    ).job.id
    if run is not None:
        with sessions.begin() as session:
            session.get_one(Job, job_id).flow_run_id = run
    return job_id


def _row(sessions: sessionmaker[Session], job_id: uuid.UUID) -> Job:
    with sessions() as session:
        return session.get_one(Job, job_id)


def _report(sessions: sessionmaker[Session], job_id: uuid.UUID, lease: timedelta = LEASE, **fields: object):
    announcer = Announcer(sessions, None)
    return apply_report(sessions, WorkerReport(job_id, "processing", **fields), announcer, lease)  # type: ignore[arg-type]


def _recover(sessions: sessionmaker[Session]) -> dict[str, str]:
    return {
        row["job_id"]: row["action"]
        for row in asyncio.run(recover_unowned_jobs(sessions, Announcer(sessions, None)))
    }


def test_a_callback_before_any_flow_run_makes_its_worker_the_runner(
    sessions: sessionmaker[Session], emitted: Emitted
) -> None:
    job_id = _job(sessions)
    applied = _report(sessions, job_id, worker_id="wan-7")
    job = _row(sessions, job_id)
    assert (applied.message, applied.detached_run) == ("job processing", None)
    assert (job.status, job.runner, job.attempts) == (JobStatus.PROCESSING, "wan-7", 1)
    assert job.runner_expires_at is not None and job.runner_expires_at > utcnow() + LEASE - timedelta(
        minutes=1
    )
    first_expiry = job.runner_expires_at
    renewed = _report(sessions, job_id, worker_id="wan-7", progress=40)
    job = _row(sessions, job_id)
    assert renewed.message == "job already processing; its runner's lease is renewed"
    assert (job.progress, job.attempts) == (40, 1) and job.runner_expires_at >= first_expiry
    assert _recover(sessions) == {}  # a live runner's job is never taken from it
    assert emitted(job_id) == ["ourvidz.job.processing", "ourvidz.job.progress"]
    with pytest.raises(Conflict) as refused:
        _report(sessions, job_id, worker_id="sdxl-2")
    assert refused.value.code == RUNNER_CONFLICT
    assert _row(sessions, job_id).runner == "wan-7"


def test_a_callback_detaches_the_flow_run_the_job_had_which_then_never_runs_it(
    sessions: sessionmaker[Session],
) -> None:
    run = uuid.uuid4()
    job_id = _job(sessions, run)
    applied = _report(sessions, job_id)
    assert applied.detached_run == run
    job = _row(sessions, job_id)
    assert (job.status, job.flow_run_id, job.runner) == (JobStatus.PROCESSING, None, UNNAMED)
    with pytest.raises(JobNotRunnable):  # the run starts anyway: it finds the job taken
        start_job(sessions, job_id, run)
    # that run ending (or crashing) is not the job's loss: it is not re-queued, so not run twice
    for fate in (RunFate.LOST, RunFate.CANCELLED):
        assert recover_job(sessions, job_id, run, fate, "its flow run ended without finishing the job") == (
            "unchanged"
        )
    assert _row(sessions, job_id).status is JobStatus.PROCESSING


def test_a_job_generating_on_its_flow_run_is_not_taken_by_a_callback(sessions: sessionmaker[Session]) -> None:
    run = uuid.uuid4()
    job_id = _job(sessions)
    start_job(sessions, job_id, run)
    with pytest.raises(Conflict) as refused:
        _report(sessions, job_id, worker_id="wan-7")
    assert refused.value.code == RUNNER_CONFLICT and str(run) in str(refused.value)
    job = _row(sessions, job_id)
    assert (job.flow_run_id, job.runner, job.attempts) == (run, None, 1)


def test_a_silent_runner_loses_the_job_to_the_queue_then_to_failure(
    sessions: sessionmaker[Session], emitted: Emitted
) -> None:
    job_id = _job(sessions)
    _report(sessions, job_id, GONE, worker_id="wan-7")  # ... and then nothing more from it
    assert _recover(sessions) == {str(job_id): "requeued"}
    job = _row(sessions, job_id)
    assert (job.status, job.runner, job.runner_expires_at, job.flow_run_id) == (
        JobStatus.QUEUED,
        None,
        None,
        None,
    )
    (recovery,) = job.meta["recoveries"]
    assert recovery["runner"] == "wan-7" and "stopped reporting" in recovery["reason"]
    assert job_id in {waiting.job_id for waiting in waiting_jobs(sessions)}  # the dispatcher's again
    with sessions.begin() as session:
        session.get_one(Job, job_id).max_attempts = 2
    _report(sessions, job_id, GONE, worker_id="wan-8")
    assert _recover(sessions) == {str(job_id): "failed"}
    job = _row(sessions, job_id)
    assert (job.status, job.error_code) == (JobStatus.FAILED, WORKER_LOST)
    assert emitted(job_id) == [
        "ourvidz.job.processing", "ourvidz.job.queued", "ourvidz.job.processing", "ourvidz.job.failed",
    ]  # fmt: skip


def test_a_runner_heard_from_again_keeps_its_job(sessions: sessionmaker[Session]) -> None:
    job_id = _job(sessions)
    _report(sessions, job_id, GONE, worker_id="wan-7")
    _report(sessions, job_id, LEASE, worker_id="wan-7", progress=10)  # late, but before recovery looked
    assert _recover(sessions) == {}
    assert recover_job(sessions, job_id, None, RunFate.LOST, "a stale look") == "unchanged"
    assert _row(sessions, job_id).status is JobStatus.PROCESSING


def test_a_processing_job_with_no_run_and_no_runner_is_found_and_requeued(
    sessions: sessionmaker[Session],
) -> None:
    """A job moved to processing before runners were recorded (or by hand): nothing would ever move it."""
    job_id, fresh = _job(sessions), _job(sessions)
    with sessions.begin() as session:
        for each, ago in ((job_id, timedelta(minutes=41)), (fresh, timedelta(0))):
            job = session.get_one(Job, each)
            job.status, job.attempts = JobStatus.PROCESSING, 1
            job.started_at = job.progressed_at = utcnow() - ago
    assert _recover(sessions) == {str(job_id): "requeued"}  # the fresh one may be a move in flight
    assert "neither a flow run nor a worker" in _row(sessions, job_id).meta["recoveries"][0]["reason"]
    # a late report of a worker that did take it adopts it again
    assert _report(sessions, fresh, worker_id="wan-7").message.startswith("job already processing")
    assert _row(sessions, fresh).runner == "wan-7"


def test_queued_jobs_left_without_a_flow_run_are_reported(sessions: sessionmaker[Session]) -> None:
    stranded, recent = _job(sessions), _job(sessions)
    with sessions.begin() as session:
        session.get_one(Job, stranded).created_at = utcnow() - timedelta(minutes=5)
    rows = {row["job_id"]: row["action"] for row in nudge_undispatched(sessions)}
    assert rows.get(str(stranded)) == "dispatchers woken" and str(recent) not in rows
