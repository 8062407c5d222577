"""Starting a job: the flow's validate stage. A job that cannot run is failed here, with its reason."""

from __future__ import annotations

import uuid
from dataclasses import replace

from sqlalchemy.orm import Session, sessionmaker

from ourvidz.catalog import UnknownJobType, get_job_type
from ourvidz.db.models import Job
from ourvidz.generation.request import InvalidRequest
from ourvidz.job_status import JobStatus
from ourvidz.jobs.content import check_content
from ourvidz.jobs.spec import JobSpec, build_request, job_bucket, requested_tier
from ourvidz.policy import PolicyError


class JobNotFound(LookupError):
    pass


class JobNotRunnable(RuntimeError):
    """The job exists but is not queued (already running, finished or cancelled); it is left alone."""


class JobRejected(ValueError):
    """The job can never run as asked; it has been marked failed with this reason."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.user_id: uuid.UUID | None = None
        self.webhook_url: str | None = None
        super().__init__(message)


def start_job(sessions: sessionmaker[Session], job_id: uuid.UUID, flow_run_id: uuid.UUID | None) -> JobSpec:
    """Check a queued job and move it to processing; returns what the rest of the flow needs."""
    with sessions.begin() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None:
            raise JobNotFound(f"job {job_id} does not exist")
        if job.status is not JobStatus.QUEUED:
            raise JobNotRunnable(f"job {job_id} is {job.status}, not queued")
        try:
            spec = _check(session, job)
        except JobRejected as exc:
            job.transition_to(JobStatus.FAILED, error=f"{exc.code}: {exc}")
            exc.user_id, exc.webhook_url = job.user_id, job.webhook_url
            rejection = exc
        else:
            job.transition_to(JobStatus.PROCESSING)
            job.flow_run_id = flow_run_id
            return replace(spec, flow_run_id=flow_run_id)
    raise rejection


def _check(session: Session, job: Job) -> JobSpec:
    try:
        job_type = get_job_type(job.job_type)
    except UnknownJobType as exc:
        raise JobRejected("INVALID_JOB_TYPE", str(exc)) from exc
    prompt = (job.original_prompt or "").strip()
    if not prompt:
        raise JobRejected("MISSING_PROMPT", "the job has no prompt")
    if len(prompt) > job_type.max_prompt_chars:
        raise JobRejected("PROMPT_TOO_LONG", f"prompt is longer than {job_type.max_prompt_chars} characters")
    metadata = dict(job.meta or {})
    try:
        tier = requested_tier(metadata)
        request = build_request(job_type.name, prompt, metadata)
        bucket = job_bucket(job_type, metadata)
    except InvalidRequest as exc:
        raise JobRejected("INVALID_PARAMETERS", str(exc)) from exc
    try:
        verdict = check_content(session, job.user_id, prompt, tier)
    except PolicyError as exc:
        raise JobRejected(exc.code, str(exc)) from None
    return JobSpec(
        id=job.id, user_id=job.user_id, job_type=job_type, prompt=prompt, request=request, bucket=bucket,
        content_tier=verdict.tier, enhance=job_type.enhanced or bool(metadata.get("enhance")),
        webhook_url=job.webhook_url, project_id=job.project_id, metadata=metadata,
    )  # fmt: skip
