"""Recovery of jobs whose flow run was lost, and the usage report, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.db.models import Image, Job
from ourvidz.db.types import utcnow
from ourvidz.job_status import JobStatus
from ourvidz.jobs.cancel import CANCEL_REQUESTED
from ourvidz.jobs.create import JobRequest, create_job, ensure_profile
from ourvidz.jobs.dispatch import dispatch_key, waiting_jobs
from ourvidz.jobs.errors import WORKER_LOST
from ourvidz.jobs.lifecycle import move
from ourvidz.jobs.progress import set_progress
from ourvidz.jobs.recovery import HUNG, PENDING_LIMIT, RunFate, Watched, fate_of, recover_job, watched_jobs
from ourvidz.orchestration.runs import RunState, RunView
from ourvidz.reports import usage_report
from tests.unit.conftest import Emitted

RUN = uuid.uuid4()


def _job(
    sessions: sessionmaker[Session], status: JobStatus, attempts: int = 1, age_seconds: float = 120
) -> uuid.UUID:
    user = uuid.uuid4()
    ensure_profile(sessions, user)
    request = JobRequest(user_id=user, job_type="sdxl_image_fast", prompt="a lighthouse")
    job_id = create_job(sessions, request).job.id
    with sessions.begin() as session:
        job = session.get_one(Job, job_id)
        job.status, job.attempts, job.flow_run_id = status, attempts, RUN
        job.created_at = utcnow() - timedelta(seconds=age_seconds)
    return job_id


def _get(sessions: sessionmaker[Session], job_id: uuid.UUID) -> Job:
    with sessions() as session:
        return session.get_one(Job, job_id)


def test_a_lost_job_is_requeued_with_a_new_dispatch_key(
    sessions: sessionmaker[Session], emitted: Emitted
) -> None:
    job_id = _job(sessions, JobStatus.PROCESSING)
    assert dispatch_key(job_id, _get(sessions, job_id).meta) == str(job_id)
    assert recover_job(sessions, job_id, RUN, RunFate.LOST, "its flow run crashed") == "requeued"
    job = _get(sessions, job_id)
    assert (job.status, job.flow_run_id, job.attempts, job.progress) == (JobStatus.QUEUED, None, 1, 0)
    assert emitted(job_id) == ["ourvidz.job.queued"]
    assert job_id in {waiting.job_id for waiting in waiting_jobs(sessions)}  # the dispatcher's to run again
    (recovery,) = job.meta["recoveries"]
    assert (recovery["flow_run_id"], recovery["attempt"], recovery["reason"]) == (
        str(RUN), 1, "its flow run crashed"
    )  # fmt: skip
    assert dispatch_key(job_id, job.meta) == f"{job_id}:recovery-1"


def test_a_job_out_of_attempts_fails_with_the_reason(sessions: sessionmaker[Session]) -> None:
    job_id = _job(sessions, JobStatus.PROCESSING, attempts=3)
    assert recover_job(sessions, job_id, RUN, RunFate.LOST, "its flow run crashed") == "failed"
    job = _get(sessions, job_id)
    assert job.status is JobStatus.FAILED and job.completed_at is not None
    assert (job.error_code, job.error_message) == (
        WORKER_LOST, "its flow run crashed; gave up after 3 of 3 attempts"
    )  # fmt: skip


def test_a_job_asked_to_stop_is_cancelled_when_its_run_is_lost(
    sessions: sessionmaker[Session], emitted: Emitted
) -> None:
    job_id = _job(sessions, JobStatus.PROCESSING)
    with sessions.begin() as session:
        row = session.get_one(Job, job_id)
        row.meta = {**row.meta, CANCEL_REQUESTED: utcnow().isoformat()}
    assert recover_job(sessions, job_id, RUN, RunFate.LOST, "its flow run crashed") == "cancelled"
    assert _get(sessions, job_id).status is JobStatus.CANCELLED
    assert emitted(job_id) == ["ourvidz.job.cancelled"]


def test_runs_that_die_before_starting_the_job_are_bounded_too(sessions: sessionmaker[Session]) -> None:
    job_id = _job(sessions, JobStatus.QUEUED, attempts=0)
    outcomes = []
    for _ in range(8):
        outcomes.append(recover_job(sessions, job_id, RUN, RunFate.LOST, "missing"))
        with sessions.begin() as session:
            session.get_one(Job, job_id).flow_run_id = RUN  # dispatched again, and lost again
    assert outcomes[:6] == ["requeued"] * 6 and outcomes[6] == "failed" and outcomes[7] == "unchanged"
    assert _get(sessions, job_id).status is JobStatus.FAILED


@pytest.mark.parametrize(
    ("fate", "status", "run", "outcome"),
    [
        (RunFate.ALIVE, JobStatus.PROCESSING, RUN, "unchanged"),
        (RunFate.LOST, JobStatus.PROCESSING, uuid.uuid4(), "unchanged"),  # the job is on another run now
        (RunFate.LOST, JobStatus.COMPLETED, RUN, "unchanged"),
        (RunFate.CANCELLED, JobStatus.PROCESSING, RUN, "cancelled"),
    ],
)
def test_only_jobs_still_on_a_lost_run_change(
    sessions: sessionmaker[Session], fate: RunFate, status: JobStatus, run: uuid.UUID, outcome: str
) -> None:
    job_id = _job(sessions, status)
    assert recover_job(sessions, job_id, run, fate, "reason") == outcome
    expected = JobStatus.CANCELLED if outcome == "cancelled" else status
    assert _get(sessions, job_id).status is expected


def test_watched_jobs_are_unfinished_jobs_with_a_run(sessions: sessionmaker[Session]) -> None:
    processing, queued = _job(sessions, JobStatus.PROCESSING), _job(sessions, JobStatus.QUEUED, attempts=0)
    _job(sessions, JobStatus.COMPLETED)
    assert {processing, queued} <= {w.job_id for w in watched_jobs(sessions)}


def test_the_usage_report_counts_jobs_credits_and_storage(sessions: sessionmaker[Session]) -> None:
    done = _job(sessions, JobStatus.COMPLETED)
    _job(sessions, JobStatus.FAILED)
    _job(sessions, JobStatus.COMPLETED, age_seconds=3 * 86400)  # outside the window
    with sessions.begin() as session:  # the job's placeholder image gets its file, and one more image
        placeholder = session.scalars(select(Image).where(Image.job_id == done)).one()
        placeholder.bucket, placeholder.size_bytes = "sdxl_image_fast", 1000
        second = Image(user_id=placeholder.user_id, job_id=done, bucket="sdxl_image_fast", image_index=1)
        second.storage_key, second.size_bytes = "k1", 2500
        session.add(second)
    report = usage_report(sessions, hours=24)
    assert report["jobs"] == {"sdxl_image_fast": {"completed": 1, "failed": 1}} and report["jobs_total"] == 2
    assert report["storage"] == {"images/sdxl_image_fast": {"files": 2, "bytes": 3500}}
    assert report["storage_bytes"] == 3500


def _watched(created_ago: timedelta = timedelta(minutes=5), silent: timedelta | None = None) -> Watched:
    now = utcnow()
    return Watched(
        uuid.uuid4(), "sdxl_image_fast", RUN, now - created_ago, None if silent is None else now - silent
    )


@pytest.mark.parametrize(
    ("state", "age", "fate"),
    [
        (None, 0, RunFate.LOST),  # the run is not in Prefect
        (RunState.CRASHED, 0, RunFate.LOST),
        (RunState.FAILED, 0, RunFate.LOST),
        (RunState.COMPLETED, 0, RunFate.LOST),  # it ended without ending its job
        (RunState.CANCELLED, 0, RunFate.CANCELLED),
        (RunState.RUNNING, 3600, RunFate.ALIVE),
        (RunState.CANCELLING, 60, RunFate.ALIVE),
        (RunState.PENDING, 60, RunFate.ALIVE),
        (RunState.PENDING, PENDING_LIMIT.total_seconds() + 1, RunFate.LOST),
    ],
    ids=["missing", "crashed", "failed", "completed", "cancelled", "running", "cancelling", "pending",
         "pending-too-long"],
)  # fmt: skip
def test_what_a_flow_run_state_means_for_its_job(state: RunState | None, age: float, fate: RunFate) -> None:
    now = utcnow()
    run = None if state is None else RunView(RUN, state, now - timedelta(seconds=age))
    assert fate_of(_watched(), run, now, timedelta(minutes=10))[0] is fate


def test_a_run_too_young_to_be_read_back_is_not_missing() -> None:
    assert fate_of(_watched(created_ago=timedelta(seconds=1)), None, utcnow(), timedelta(minutes=10))[0] is (
        RunFate.ALIVE
    )


@pytest.mark.parametrize(("silent_minutes", "fate"), [(9, RunFate.ALIVE), (11, RunFate.HUNG)])
def test_a_running_job_silent_past_the_stall_limit_is_hung(silent_minutes: int, fate: RunFate) -> None:
    """Its worker still heartbeats, so the run looks Running; only the silence gives it away."""
    now = utcnow()
    run = RunView(RUN, RunState.RUNNING, now - timedelta(hours=1))
    verdict = fate_of(_watched(silent=timedelta(minutes=silent_minutes)), run, now, timedelta(minutes=10))
    assert verdict[0] is fate
    assert verdict[1].startswith(HUNG) is (fate is RunFate.HUNG)


def test_watched_jobs_know_when_a_processing_job_last_progressed(sessions: sessionmaker[Session]) -> None:
    processing, queued = _job(sessions, JobStatus.QUEUED), _job(sessions, JobStatus.QUEUED)
    with sessions.begin() as session:
        move(session, session.get_one(Job, processing), JobStatus.PROCESSING)
    started = _get(sessions, processing).started_at
    assert started is not None and _get(sessions, processing).progressed_at == started
    set_progress(sessions, processing, 40)
    progressed = _get(sessions, processing).progressed_at
    assert progressed is not None and progressed >= started
    silent = {w.job_id: w.silent_since for w in watched_jobs(sessions)}
    assert silent[processing] == progressed and silent[queued] is None
    later = progressed + timedelta(minutes=3)
    assert {w.job_id: w.silent_for(later) for w in watched_jobs(sessions)}[processing] == timedelta(minutes=3)
    with sessions.begin() as session:  # back in the queue: the next attempt starts its own clock
        move(session, session.get_one(Job, processing), JobStatus.QUEUED)
    assert _get(sessions, processing).progressed_at is None
