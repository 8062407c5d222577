"""Creating jobs: the one place a job row and its user's profile come into being."""

from __future__ import annotations

import uuid
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.catalog import get_job_type
from ourvidz.db.models import Image, Job, Profile, Video
from ourvidz.jobs.announce import announce_queued
from ourvidz.jobs.spec import build_request, job_bucket, requested_tier
from ourvidz.policy import ContentTier


def ensure_profile(
    sessions: sessionmaker[Session],
    user_id: uuid.UUID,
    *,
    tier: ContentTier = ContentTier.ARTISTIC,
    age_verified: bool = False,
) -> None:
    """Create the profile of `user_id` if it does not exist yet (its settings are left alone if it does)."""
    with sessions.begin() as session:
        if session.get(Profile, user_id) is None:
            session.add(Profile(id=user_id, content_tier_allowed=tier, age_verified=age_verified))


class NewJob(NamedTuple):
    job: Job
    created: bool  # False: an earlier job with the same idempotency key was returned


def create_job(sessions: sessionmaker[Session], **fields: Any) -> NewJob:
    """`add_job` in a transaction of its own (the fields are `add_job`'s)."""
    try:
        with sessions.begin() as session:
            return add_job(session, **fields)
    except IntegrityError:
        if (earlier := earlier_job(sessions, fields["user_id"], fields.get("idempotency_key"))) is None:
            raise
        return earlier


def add_job(
    session: Session,
    *,
    user_id: uuid.UUID,
    job_type: str,
    prompt: str,
    metadata: dict[str, Any] | None = None,
    project_id: uuid.UUID | None = None,
    image_id: uuid.UUID | None = None,
    video_id: uuid.UUID | None = None,
    webhook_url: str | None = None,
    idempotency_key: str | None = None,
    max_attempts: int = 3,
    announce: bool = True,
) -> NewJob:
    """A queued job, checked like the flow will check it (type, prompt, options); raises on bad input.

    Runs in the caller's transaction, so the gateway records a job in one database round trip per
    statement and one commit. The job's output row is linked now (the given image/video row, or a new
    placeholder), so a client can show it before generation ends. With an `idempotency_key` this user
    already used, the earlier job is returned instead; when two such requests race, the commit of the
    second raises IntegrityError and `earlier_job` finds the first. `announce` wakes `ourvidz
    dispatcher` processes; a gateway that dispatches the job itself skips that statement.
    """
    job = get_job_type(job_type)
    metadata = dict(metadata or {})
    build_request(job.name, prompt, metadata)
    job_bucket(job, metadata)
    requested_tier(metadata)
    if idempotency_key is not None:
        earlier = session.scalar(
            select(Job).where(Job.user_id == user_id, Job.idempotency_key == idempotency_key)
        )
        if earlier is not None:
            return NewJob(earlier, False)
    if session.get(Profile, user_id) is None:  # first job of an authenticated user
        try:
            with session.begin_nested():  # two first requests at once: the second finds the first's
                session.add(Profile(id=user_id))
        except IntegrityError:
            pass
    row = Job(
        user_id=user_id, job_type=job.name, queue=job.queue, format=job.format, quality=job.quality,
        model_type=job.model_variant, original_prompt=prompt, meta=metadata, project_id=project_id,
        webhook_url=webhook_url, idempotency_key=idempotency_key, max_attempts=max_attempts,
    )  # fmt: skip
    session.add(row)
    session.flush()
    _link_output_row(session, row, image_id, video_id)
    if announce:
        announce_queued(session)
    return NewJob(row, True)


def earlier_job(sessions: sessionmaker[Session], user_id: uuid.UUID, key: str | None) -> NewJob | None:
    """The job this user already created with idempotency `key`, if any."""
    if key is None:
        return None
    with sessions() as session:
        job = session.scalar(select(Job).where(Job.user_id == user_id, Job.idempotency_key == key))
    return None if job is None else NewJob(job, False)


def _link_output_row(
    session: Session, job: Job, image_id: uuid.UUID | None, video_id: uuid.UUID | None
) -> None:
    common = {"user_id": job.user_id, "project_id": job.project_id, "job_id": job.id, "status": "queued"}
    if job.format == "video":
        video = session.get(Video, video_id) if video_id else None
        if video is None:
            video = Video(prompt=job.original_prompt, quality=job.quality, **common)
            session.add(video)
        else:
            video.job_id, video.status = job.id, "queued"
        session.flush()
        job.video_id = video.id
    else:
        image = session.get(Image, image_id) if image_id else None
        if image is None:
            image = Image(image_index=0, prompt=job.original_prompt, quality=job.quality, **common)
            session.add(image)
        else:
            image.job_id, image.image_index, image.status = job.id, 0, "queued"
        session.flush()
        job.image_id = image.id
