"""Reports from workers outside Prefect (the seed system's `job-callback`): processing, completed, failed.

A report moves the job like any other entry point: `processing` through `move` (announced), an ending
through `conclude` (final row, outputs and usage row, event, webhook). The same ending twice changes
nothing the second time; a move the life cycle does not allow is refused.

The worker that reports a job processing becomes its runner: it owns the job while its lease lasts,
and every later `processing` report of it (with `progress`, if it sends one) renews the lease.
Recovery re-queues a job whose runner went silent (`ourvidz.jobs.recovery`). A flow run the job had
is detached (the caller cancels it in Prefect; if it starts anyway it finds the job taken), so the
job is never generated twice; a job already generating on its flow run, or on another worker, is
not taken (409 RUNNER_CONFLICT).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, NamedTuple

from sqlalchemy.orm import Session, sessionmaker

from ourvidz.db.models import Job
from ourvidz.db.types import utcnow
from ourvidz.job_status import IllegalTransition, JobStatus
from ourvidz.jobs.conclude import conclude
from ourvidz.jobs.errors import WORKER_FAILED, Conflict, Failure, InvalidJob, NotFound
from ourvidz.jobs.lifecycle import Announcer, move
from ourvidz.jobs.outputs import Output
from ourvidz.jobs.view import read_job
from ourvidz.orchestration.events import emit_job_event

NO_MESSAGE = "the worker reported a failure without a message"
UNNAMED = "external"  # the runner of a report that names no worker_id
RUNNER_CONFLICT = "RUNNER_CONFLICT"
DEFAULT_LEASE = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class WorkerReport:
    job_id: uuid.UUID
    status: Literal["processing", "completed", "failed"]
    outputs: list[Output] = field(default_factory=list)
    error_message: str | None = None
    enhanced_prompt: str | None = None
    metadata: dict[str, Any] | None = None
    worker_id: str | None = None
    progress: int | None = None  # 0-100, of a processing report


class Applied(NamedTuple):
    job: Job
    message: str
    detached_run: uuid.UUID | None = None  # the flow run the job had before its runner took it


def apply_report(
    sessions: sessionmaker[Session],
    report: WorkerReport,
    announcer: Announcer,
    lease: timedelta = DEFAULT_LEASE,
) -> Applied:
    """Apply the report; raises NotFound for an unknown job and Conflict for a move the life cycle
    does not allow or a job someone else runs (an ending the job already has is answered as done)."""
    target = JobStatus(report.status)
    current = read_job(sessions, report.job_id)
    if current.status.is_final:
        if current.status is target:
            return Applied(current, f"job already {target}; nothing changed")
        raise Conflict(str(IllegalTransition(current.status, target)), code="ILLEGAL_TRANSITION")
    if target is JobStatus.PROCESSING:
        message, detached = _processing(sessions, report, announcer, lease)
        return Applied(read_job(sessions, report.job_id), message, detached)
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


def _processing(
    sessions: sessionmaker[Session], report: WorkerReport, announcer: Announcer, lease: timedelta
) -> tuple[str, uuid.UUID | None]:
    """Take the job for the report's worker, or renew that worker's lease on it."""
    runner = report.worker_id or UNNAMED
    started, detached = None, None
    with sessions.begin() as session:
        job = _locked(session, report.job_id)
        if job.status is JobStatus.PROCESSING:
            _check_runner(job, runner)
            message = "job already processing; its runner's lease is renewed"
        else:
            try:
                started = move(session, job, JobStatus.PROCESSING)
            except IllegalTransition as exc:  # it ended meanwhile
                raise Conflict(str(exc), code="ILLEGAL_TRANSITION") from None
            detached, job.flow_run_id = job.flow_run_id, None
            message = "job processing"
        job.runner = runner if job.runner in (None, UNNAMED) else job.runner
        job.runner_expires_at = utcnow() + lease
        if report.progress is not None:
            job.progress, job.progressed_at = report.progress, utcnow()
        _details(job, report)
        user_id, job_type = job.user_id, job.job_type
    if started is not None:
        announcer(started)
    if report.progress is not None:
        emit_job_event("progress", report.job_id, user_id, job_type, {"progress": report.progress})
    return message, detached


def _check_runner(job: Job, runner: str) -> None:
    """A processing job is the report's worker's to renew only if that worker runs it (or it has no
    owner at all: a job left processing without a run or a runner is adopted)."""
    if job.runner is None and job.flow_run_id is not None:
        raise Conflict(f"the job is generating on its flow run {job.flow_run_id}", code=RUNNER_CONFLICT)
    if job.runner not in (None, UNNAMED, runner) and runner != UNNAMED:
        raise Conflict(f"the job is run by worker {job.runner}", code=RUNNER_CONFLICT)


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
