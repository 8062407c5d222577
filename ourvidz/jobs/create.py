"""Creating jobs: the one place a job row comes into being, for every entry point.

The gateway (`queue-job`, `generate-admin-image`) and a generation run started from Prefect with a
prompt instead of a job id both come here, so a job is checked the same way whoever asks: its type,
prompt and options, the rows it names, its owner's content tier and the content policy. A bad request
raises (`InvalidJob`, `NotFound`, a `PolicyError`) before anything is written.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, NamedTuple

from pydantic import HttpUrl, TypeAdapter, UrlConstraints, ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.auth import Role
from ourvidz.db.models import Image, Job, Profile, Project, UserRole, Video
from ourvidz.egress import UrlNotAllowed
from ourvidz.job_status import JobStatus
from ourvidz.jobs.content import check_content, refusals_recorded
from ourvidz.jobs.errors import InvalidJob, NotFound
from ourvidz.jobs.references import NO_RULES, ReferenceRules, check_access
from ourvidz.jobs.spec import Checked, check_job
from ourvidz.jobs.wake import wake_dispatchers
from ourvidz.policy import ContentPolicy, ContentTier

# The profile that owns jobs an operator starts from Prefect without naming a user (bootstrap makes it).
OPERATOR_USER_ID = uuid.uuid5(uuid.NAMESPACE_URL, "https://ourvidz.local/operator")
OPERATOR_USERNAME = "operator"
DEFAULT_MAX_METADATA_BYTES = 16_384
Url = Annotated[HttpUrl, UrlConstraints(max_length=2048)]  # the longest URL the database keeps
_URL = TypeAdapter(Url)


@dataclass(frozen=True, slots=True)
class JobRequest:
    """What a caller asks for. The job's generation options live in `metadata` (see `ourvidz.jobs.spec`)."""

    user_id: uuid.UUID
    job_type: str
    prompt: str | None
    metadata: dict[str, Any] = field(default_factory=dict)
    project_id: uuid.UUID | None = None
    image_id: uuid.UUID | None = None
    video_id: uuid.UUID | None = None
    webhook_url: str | None = None
    idempotency_key: str | None = None
    flow_run_id: uuid.UUID | None = None  # a job started in Prefect belongs to that run from the start
    max_attempts: int = 3


class NewJob(NamedTuple):
    job: Job
    created: bool  # False: an earlier job with the same idempotency key was returned


class Accepted(NamedTuple):
    job: Job
    created: bool
    queue_length: int  # queued and running jobs of the job's queue, this one included


def accept_job(
    sessions: sessionmaker[Session],
    request: JobRequest,
    max_metadata_bytes: int = DEFAULT_MAX_METADATA_BYTES,
    policy: ContentPolicy | None = None,
    *,
    rules: ReferenceRules = NO_RULES,
) -> Accepted:
    """Record the job and count its queue in one transaction (the gateway's hot path: a handful of
    round trips and one commit). A retry with the same idempotency key gets the first job, also when
    the two race (the unique constraint stops the second insert)."""
    try:
        with refusals_recorded(sessions), sessions.begin() as session:
            new = add_job(session, request, max_metadata_bytes, policy, rules=rules)
            return Accepted(new.job, new.created, queue_length(session, new.job.queue))
    except IntegrityError:
        if (earlier := earlier_job(sessions, request.user_id, request.idempotency_key)) is None:
            raise
        with sessions() as session:
            return Accepted(earlier.job, False, queue_length(session, earlier.job.queue))


def create_job(
    sessions: sessionmaker[Session],
    request: JobRequest,
    max_metadata_bytes: int = DEFAULT_MAX_METADATA_BYTES,
    policy: ContentPolicy | None = None,
    *,
    rules: ReferenceRules = NO_RULES,
) -> NewJob:
    """`accept_job` without the queue count."""
    accepted = accept_job(sessions, request, max_metadata_bytes, policy, rules=rules)
    return NewJob(accepted.job, accepted.created)


def add_job(
    session: Session,
    request: JobRequest,
    max_metadata_bytes: int = DEFAULT_MAX_METADATA_BYTES,
    policy: ContentPolicy | None = None,
    *,
    rules: ReferenceRules = NO_RULES,
) -> NewJob:
    """A queued job, checked like the flow will check it; raises on bad input. Runs in the caller's
    transaction. The job's output row is linked now (the given image/video row, or a new placeholder),
    so a client can show it before generation ends. Dispatchers are woken when the transaction commits
    (a job started in Prefect already has its run and needs none). `policy`: the process's own
    (operator vocabularies included) when not given. `rules`: the Wan image-to-video models this
    process runs, so a Wan job may name reference frames."""
    request = _with_project_prompt(session, request)
    checked = _checked(request, max_metadata_bytes, rules)
    job_type, prompt = checked.job_type, checked.prompt
    if request.idempotency_key is not None:
        earlier = session.scalar(
            select(Job).where(Job.user_id == request.user_id, Job.idempotency_key == request.idempotency_key)
        )
        if earlier is not None:
            return NewJob(earlier, False)
    _check_ownership(session, request)
    if checked.img2img is not None:
        check_access(checked.img2img, request.user_id, rules)
    profile = session.get(Profile, request.user_id)  # held: the content check reads it, no second query
    check_content(session, request.user_id, prompt, checked.tier, policy)
    if enhanced := checked.metadata.get("enhanced_prompt"):
        check_content(session, request.user_id, enhanced, checked.tier, policy)
    if profile is None:  # first job of an authenticated user
        try:
            with session.begin_nested():  # two first requests at once: the second finds the first's
                session.add(Profile(id=request.user_id))
        except IntegrityError:
            pass
    row = Job(
        user_id=request.user_id, job_type=job_type.name, queue=job_type.queue, format=job_type.format,
        quality=job_type.quality, model_type=job_type.model_variant, original_prompt=prompt,
        meta=_recorded(checked), project_id=request.project_id, webhook_url=request.webhook_url,
        idempotency_key=request.idempotency_key, max_attempts=request.max_attempts,
        flow_run_id=request.flow_run_id,
    )  # fmt: skip
    session.add(row)
    session.flush()
    _link_output_row(session, row, request.image_id, request.video_id)
    if request.flow_run_id is None:
        wake_dispatchers(session)
    return NewJob(row, True)


def _recorded(checked: Checked) -> dict[str, Any]:
    """The job's metadata as stored: as asked, plus an image-to-image job's mode."""
    if checked.img2img is None:
        return checked.metadata
    return {**checked.metadata, "reference_mode": checked.img2img.mode}


def _with_project_prompt(session: Session, request: JobRequest) -> JobRequest:
    """A request without a prompt takes its project's (enhanced, else original), as era A's queue-job
    does; the project's owner is checked with the other rows it names."""
    if (request.prompt or "").strip() or request.project_id is None:
        return request
    project = session.get(Project, request.project_id)
    if project is None or project.user_id != request.user_id:
        return request
    return replace(request, prompt=project.enhanced_prompt or project.original_prompt)


def _checked(request: JobRequest, max_metadata_bytes: int, rules: ReferenceRules) -> Checked:
    if len(json.dumps(request.metadata or {}, default=str)) > max_metadata_bytes:
        raise InvalidJob(f"metadata is larger than {max_metadata_bytes} bytes", code="METADATA_TOO_LARGE")
    if request.webhook_url is not None:
        try:
            _URL.validate_python(request.webhook_url)
        except ValidationError:
            raise InvalidJob(
                "webhook_url must be an http(s) URL of at most 2048 characters",
                details={"field": "webhook_url"},
            ) from None
        try:
            rules.egress.check(request.webhook_url)
        except UrlNotAllowed as exc:
            raise InvalidJob(
                f"webhook_url is not allowed: {exc}", code="URL_NOT_ALLOWED", details={"field": "webhook_url"}
            ) from None
    return check_job(request.job_type, request.prompt, request.metadata, rules=rules)


def _check_ownership(session: Session, request: JobRequest) -> None:
    for model, row_id, name in ((Project, request.project_id, "project"), (Image, request.image_id, "image"),
                                (Video, request.video_id, "video")):  # fmt: skip
        if row_id is not None:
            row = session.get(model, row_id)
            if row is None or row.user_id != request.user_id:
                raise NotFound(f"{name} not found")


def queue_length(session: Session, queue: str | None) -> int:
    """Queued and running jobs of the queue."""
    query = select(func.count()).where(
        Job.queue == queue, Job.status.in_([JobStatus.QUEUED, JobStatus.PROCESSING])
    )
    return int(session.scalar(query) or 0)


def earlier_job(sessions: sessionmaker[Session], user_id: uuid.UUID, key: str | None) -> NewJob | None:
    """The job this user already created with idempotency `key`, if any."""
    if key is None:
        return None
    with sessions() as session:
        job = session.scalar(select(Job).where(Job.user_id == user_id, Job.idempotency_key == key))
    return None if job is None else NewJob(job, False)


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


def ensure_operator(sessions: sessionmaker[Session]) -> bool:
    """The operator profile (an admin) that owns jobs started from Prefect without a `user_id`; True if
    it was created now. Its tier and verification are an operator's to change, and never reset here."""
    with sessions.begin() as session:
        if session.get(Profile, OPERATOR_USER_ID) is not None:
            return False
        session.add(
            Profile(id=OPERATOR_USER_ID, username=OPERATOR_USERNAME, roles=[UserRole(role=Role.ADMIN)])
        )
        return True


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
