"""A job as its readers see it: the row, and its stored files (images by index, then each video and its
thumbnail)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.db.models import Image, Job, Video
from ourvidz.jobs.errors import NotFound


def read_job(sessions: sessionmaker[Session], job_id: uuid.UUID) -> Job:
    """The job's row as it is now; NotFound if there is none."""
    with sessions() as session:
        job = session.get(Job, job_id)
    if job is None:
        raise NotFound("job not found")
    return job


@dataclass(frozen=True, slots=True)
class StoredFile:
    type: Literal["image", "video", "thumbnail"]
    bucket: str
    key: str
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    size_bytes: int | None = None
    frames: int | None = None
    duration: float | None = None


def stored_files(sessions: sessionmaker[Session], job_id: uuid.UUID) -> list[StoredFile]:
    """The files in our storage (rows still waiting for theirs, or pointing elsewhere, are left out)."""
    with sessions() as session:
        images = session.scalars(
            select(Image).where(Image.job_id == job_id).order_by(Image.image_index)
        ).all()
        videos = session.scalars(select(Video).where(Video.job_id == job_id)).all()
    files = [
        StoredFile("image", i.bucket, i.storage_key, i.width, i.height, i.seed, i.size_bytes)
        for i in images
        if i.bucket and i.storage_key
    ]
    for v in videos:
        if v.bucket and v.storage_key:
            files.append(StoredFile("video", v.bucket, v.storage_key, v.width, v.height, v.seed, v.size_bytes,
                                    v.frames, v.duration_seconds))  # fmt: skip
        if v.bucket and v.thumbnail_key:
            files.append(StoredFile("thumbnail", v.bucket, v.thumbnail_key, v.width, v.height, v.seed))
    return files
