"""The job life cycle: every pair of statuses is either an allowed move or raises."""

from __future__ import annotations

import itertools
import uuid

import pytest
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.db.models import Job, Profile
from ourvidz.job_status import IllegalTransition, JobStatus, check_transition
from ourvidz.jobs.errors import Failure
from ourvidz.jobs.lifecycle import move

Q, P, C, F, X = "queued", "processing", "completed", "failed", "cancelled"
# Written out by hand from the spec (queued -> processing -> completed | failed | cancelled), plus
# cancelling or failing a job before it starts and re-queueing one whose worker vanished.
LEGAL = {(Q, P), (Q, F), (Q, X), (P, C), (P, F), (P, X), (P, Q)}
ALL_PAIRS = list(itertools.product([Q, P, C, F, X], repeat=2))


@pytest.mark.parametrize(("current", "target"), sorted(LEGAL))
def test_legal_transition(current: str, target: str) -> None:
    assert check_transition(current, target) is JobStatus(target)


@pytest.mark.parametrize(("current", "target"), sorted(set(ALL_PAIRS) - LEGAL))
def test_illegal_transition_raises(current: str, target: str) -> None:
    with pytest.raises(IllegalTransition) as info:
        check_transition(current, target)
    assert info.value.current == current and info.value.target == target
    assert f"from {current} to {target}" in str(info.value)


def test_unknown_status_is_rejected() -> None:
    with pytest.raises(ValueError, match="'running' is not a valid JobStatus"):
        check_transition("queued", "running")


def test_final_statuses() -> None:
    assert {status for status in JobStatus if status.is_final} == {C, F, X}


def _new_job(sessions: sessionmaker[Session]) -> uuid.UUID:
    with sessions.begin() as session:
        user = Profile()
        session.add(user)
        session.flush()
        job = Job(user_id=user.id, job_type="sdxl_image_fast", queue="sdxl")
        session.add(job)
        session.flush()
        return job.id


def test_job_row_life_cycle_is_persisted(sessions: sessionmaker[Session]) -> None:
    job_id = _new_job(sessions)
    with sessions.begin() as session:
        job = session.get_one(Job, job_id)
        assert (job.status, job.attempts, job.progress) == (JobStatus.QUEUED, 0, 0)
        move(session, job, JobStatus.PROCESSING)
    with sessions.begin() as session:
        job = session.get_one(Job, job_id)
        assert job.status is JobStatus.PROCESSING and job.attempts == 1
        assert job.started_at is not None and job.started_at.tzinfo is not None
        move(session, job, JobStatus.QUEUED)  # its worker vanished
        move(session, job, JobStatus.PROCESSING)
        assert job.attempts == 2
        move(session, job, JobStatus.FAILED, failure=Failure("OUT_OF_MEMORY", "decoder ran out of memory"))
    with sessions.begin() as session:
        job = session.get_one(Job, job_id)
        assert (job.status, job.error_code, job.error_message) == (
            JobStatus.FAILED, "OUT_OF_MEMORY", "decoder ran out of memory"
        )  # fmt: skip
        assert job.completed_at is not None and job.completed_at >= job.started_at
        with pytest.raises(IllegalTransition):
            move(session, job, JobStatus.PROCESSING)
        assert job.status is JobStatus.FAILED


def test_completed_job_has_full_progress(sessions: sessionmaker[Session]) -> None:
    job_id = _new_job(sessions)
    with sessions.begin() as session:
        job = session.get_one(Job, job_id)
        move(session, job, JobStatus.PROCESSING)
        job.progress = 40
        move(session, job, JobStatus.COMPLETED)
    with sessions.begin() as session:
        job = session.get_one(Job, job_id)
        assert (job.status, job.progress) == (JobStatus.COMPLETED, 100)
