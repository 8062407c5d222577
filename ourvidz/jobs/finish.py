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


def finish_job(
    sessions: sessionmaker[Session], job_id: uuid.UUID, status: JobStatus, error: str | None = None
) -> bool:
    """Move a job to a final status; False (and no change) if it already is final.

    A second finish is harmless: a job cancelled by the user stays cancelled even if its flow run
    later reports failure.
    """
    with sessions.begin() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.status.is_final:
            return False
        job.transition_to(status, error=None if error is None else error[:MAX_ERROR_CHARS])
        if job.status is not JobStatus.COMPLETED:  # the placeholder rows say why no file will come
            for model, row_id in ((Image, job.image_id), (Video, job.video_id)):
                row = session.get(model, row_id) if row_id else None
                if row is not None and row.status != "completed":
                    row.status = str(job.status)
        return True
