"""Reports from workers outside Prefect (the seed system's `job-callback`): processing, completed, failed.

A report moves the job like any other entry point: `processing` through `move` (announced), an ending
through `conclude` (final row, outputs and usage row, event, webhook). The same report twice changes
nothing the second time; a move the life cycle does not allow is refused.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from sqlalchemy.orm import Session, sessionmaker

from ourvidz.db.models import Job
from ourvidz.job_status import IllegalTransition, JobStatus
from ourvidz.jobs.conclude import conclude
from ourvidz.jobs.errors import WORKER_FAILED, Conflict, Failure, InvalidJob, NotFound
from ourvidz.jobs.lifecycle import Announcer, move
from ourvidz.jobs.outputs import Output
from ourvidz.jobs.view import read_job

NO_MESSAGE = "the worker reported a failure without a message"


@dataclass(frozen=True, slots=True)
class WorkerReport:
    job_id: uuid.UUID
    status: Literal["processing", "completed", "failed"]
    outputs: list[Output] = field(default_factory=list)
    error_message: str | None = None
    enhanced_prompt: str | None = None
    metadata: dict[str, Any] | None = None


class Applied(NamedTuple):
    job: Job
    message: str


def apply_report(sessions: sessionmaker[Session], report: WorkerReport, announcer: Announcer) -> Applied:
    """Apply the report; raises NotFound for an unknown job and Conflict for a move the life cycle
    does not allow (a report of the status the job already has is answered as done)."""
    target = JobStatus(report.status)
    current = read_job(sessions, report.job_id)
    if current.status is target:
        return Applied(current, f"job already {target}; nothing changed")
    if current.status.is_final:
        raise Conflict(str(IllegalTransition(current.status, target)), code="ILLEGAL_TRANSITION")
    if target is JobStatus.PROCESSING:
        _processing(sessions, report, announcer)
    else:
        _check_outputs(current, report.outputs)
        _keep_details(sessions, report)
        failure = None
        if target is JobStatus.FAILED:
            failure = Failure(WORKER_FAILED, report.error_message or NO_MESSAGE)
        ended = conclude(
            sessions, report.job_id, target, failure=failure, outputs=report.outputs,
            prompt=report.enhanced_prompt, announcer=announcer,
        )  # fmt: skip
        if ended is None:  # it ended meanwhile, by another hand
            job = read_job(sessions, report.job_id)
            raise Conflict(str(IllegalTransition(job.status, target)), code="ILLEGAL_TRANSITION")
    return Applied(read_job(sessions, report.job_id), f"job {target}")


def _check_outputs(job: Job, outputs: list[Output]) -> None:
    """A report may not hold more files than the job makes (its `num_images`, one video): each would
    be a row and a charge."""
    asked = (job.meta or {}).get("num_images")
    images = asked if isinstance(asked, int) and not isinstance(asked, bool) and asked > 0 else 1
    counts = {"image": 0, "video": 0}
    for output in outputs:
        counts[output.kind] += 1
    for kind, most in (("image", images), ("video", 1)):
        if counts[kind] > most:
            raise InvalidJob(
                f"the job makes at most {most} {kind}(s); the report has {counts[kind]}",
                details={"field": "imageUrls" if kind == "image" else "assets"},
            )


def _processing(sessions: sessionmaker[Session], report: WorkerReport, announcer: Announcer) -> None:
    with sessions.begin() as session:
        job = _locked(session, report.job_id)
        try:
            started = move(session, job, JobStatus.PROCESSING)
        except IllegalTransition as exc:
            raise Conflict(str(exc), code="ILLEGAL_TRANSITION") from None
        _details(job, report)
    announcer(started)


def _keep_details(sessions: sessionmaker[Session], report: WorkerReport) -> None:
    """The worker's enhanced prompt and metadata, kept before the job is ended."""
    if not report.enhanced_prompt and not report.metadata:
        return
    with sessions.begin() as session:
        job = _locked(session, report.job_id)
        if not job.status.is_final:
            _details(job, report)


def _details(job: Job, report: WorkerReport) -> None:
    if report.enhanced_prompt:
        job.enhanced_prompt = report.enhanced_prompt
    if report.metadata:
        job.meta = {**(job.meta or {}), "callback": report.metadata}


def _locked(session: Session, job_id: uuid.UUID) -> Job:
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        raise NotFound("job not found")
    return job
