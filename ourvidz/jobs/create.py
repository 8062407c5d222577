"""Creating jobs: the one place a job row and its user's profile come into being."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.catalog import get_job_type
from ourvidz.db.models import Job, Profile
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


def create_job(
    sessions: sessionmaker[Session],
    *,
    user_id: uuid.UUID,
    job_type: str,
    prompt: str,
    metadata: dict[str, Any] | None = None,
    project_id: uuid.UUID | None = None,
    webhook_url: str | None = None,
    idempotency_key: str | None = None,
    max_attempts: int = 3,
) -> Job:
    """A queued job, checked like the flow will check it (type, prompt, options); raises on bad input.

    With an `idempotency_key` already used by this user, the existing job is returned instead.
    """
    job = get_job_type(job_type)
    metadata = dict(metadata or {})
    build_request(job.name, prompt, metadata)
    job_bucket(job, metadata)
    requested_tier(metadata)
    with sessions.begin() as session:
        if idempotency_key is not None:
            existing = session.scalar(
                select(Job).where(Job.user_id == user_id, Job.idempotency_key == idempotency_key)
            )
            if existing is not None:
                return existing
        row = Job(
            user_id=user_id, job_type=job.name, queue=job.queue, format=job.format, quality=job.quality,
            model_type=job.model_variant, original_prompt=prompt, meta=metadata, project_id=project_id,
            webhook_url=webhook_url, idempotency_key=idempotency_key, max_attempts=max_attempts,
        )  # fmt: skip
        session.add(row)
        session.flush()
        return row
