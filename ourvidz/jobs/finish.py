"""Progress and final states of a running job, written to the database (the source of truth)."""

from __future__ import annotations

import uuid

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.db.models import Image, Job, Video
from ourvidz.db.types import utcnow
from ourvidz.job_status import JobStatus

MAX_ERROR_CHARS = 2000


def set_progress(sessions: sessionmaker[Session], job_id: uuid.UUID, percent: int) -> None:
    """Record progress of a processing job (0-100); a job in any other status is left alone."""
    with sessions.begin() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.PROCESSING)
            .values(progress=max(0, min(100, percent)), progressed_at=utcnow())
        )


class Superseded(Exception):
    """The job was recovered onto another flow run while this one was away (hung, or cut off)."""


def owned_by(job: Job, flow_run_id: uuid.UUID | None) -> bool:
    """Whether `flow_run_id` (None: a caller outside Prefect) may still change the job."""
    return flow_run_id is None or job.flow_run_id == flow_run_id


def finish_job(
    sessions: sessionmaker[Session],
    job_id: uuid.UUID,
    status: JobStatus,
    error: str | None = None,
    flow_run_id: uuid.UUID | None = None,
) -> bool:
    """Move a job to a final status; False (and no change) if it already is final, or if it now
    belongs to another flow run than `flow_run_id`.

    A second finish is harmless: a job cancelled by the user stays cancelled even if its flow run
    later reports failure, and a run that comes back after its job was recovered changes nothing.
    """
    with sessions.begin() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.status.is_final or not owned_by(job, flow_run_id):
            return False
        job.transition_to(status, error=None if error is None else error[:MAX_ERROR_CHARS])
        if job.status is not JobStatus.COMPLETED:  # the placeholder rows say why no file will come
            for model, row_id in ((Image, job.image_id), (Video, job.video_id)):
                row = session.get(model, row_id) if row_id else None
                if row is not None and row.status != "completed":
                    row.status = str(job.status)
        return True
