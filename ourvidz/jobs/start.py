"""Starting a job: the flow's validate stage. A job that cannot run is failed here, with its reason.

The checks are the ones the job was created with (`ourvidz.jobs.create`), made again because a
profile's tier can change while a job waits; a job that passes moves to processing, announced.
"""

from __future__ import annotations

import uuid
from dataclasses import replace

from sqlalchemy.orm import Session, sessionmaker

from ourvidz.config import get_settings
from ourvidz.db.models import Job
from ourvidz.job_status import JobStatus
from ourvidz.jobs.conclude import conclude
from ourvidz.jobs.content import check_content, record_refusal
from ourvidz.jobs.errors import Failure, JobError, NotFound
from ourvidz.jobs.lifecycle import Announcer, Move, default_announcer, move
from ourvidz.jobs.references import ReferenceRules
from ourvidz.jobs.spec import Checked, JobSpec, check_job
from ourvidz.policy import ContentCheckUnavailable, ContentProhibited, PolicyError


class JobNotRunnable(RuntimeError):
    """The job exists but is not queued (already running, finished or cancelled); it is left alone."""


class JobRejected(ValueError):
    """The job can never run as asked; it has been failed (and that announced) with this failure."""

    def __init__(self, failure: Failure) -> None:
        self.failure = failure
        super().__init__(str(failure))


def start_job(
    sessions: sessionmaker[Session],
    job_id: uuid.UUID,
    run_id: uuid.UUID | None,
    announcer: Announcer | None = None,
) -> JobSpec:
    """Check a queued job and move it to processing on run `run_id`; returns what the rest of the flow
    needs. Raises NotFound, JobNotRunnable, or JobRejected (the job is then failed)."""
    announcer = announcer or default_announcer(sessions)
    started: Move | None = None
    with sessions.begin() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None:
            raise NotFound(f"job {job_id} does not exist")
        if job.status is not JobStatus.QUEUED:
            raise JobNotRunnable(f"job {job_id} is {job.status}, not queued")
        try:
            spec = _check(session, job)
        except (JobError, PolicyError, ContentCheckUnavailable) as refused:  # fail closed: the job fails
            exc, failure = refused, Failure.of(refused)
        else:
            started = move(session, job, JobStatus.PROCESSING)
            job.flow_run_id = run_id
    if started is None:
        if isinstance(exc, ContentProhibited):
            record_refusal(sessions, exc)
        conclude(sessions, job_id, JobStatus.FAILED, failure=failure, announcer=announcer)
        raise JobRejected(failure)
    announcer(started)
    return replace(spec, flow_run_id=run_id)


def _check(session: Session, job: Job) -> JobSpec:
    checked = check_job(job.job_type, job.original_prompt, job.meta, rules=ReferenceRules.of(get_settings()))
    verdict = check_content(session, job.user_id, checked.prompt, checked.tier)
    return JobSpec(
        id=job.id, user_id=job.user_id, job_type=checked.job_type, prompt=checked.prompt,
        request=checked.request, bucket=checked.bucket, content_tier=verdict.tier,
        enhance=_enhances(checked),
        webhook_url=job.webhook_url, project_id=job.project_id, metadata=checked.metadata,
        img2img=checked.img2img,
    )  # fmt: skip


def _enhances(checked: Checked) -> bool:
    """The job's `enhance` option if it has one (a client that enhanced the prompt itself turns it off),
    else the job type's default (the `*7b_*_enhanced` types enhance)."""
    asked = checked.metadata.get("enhance")
    return checked.job_type.enhanced if asked is None else bool(asked)
