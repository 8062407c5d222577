"""Jobs: queue one, read its status and files, cancel it. A user only ever sees their own jobs."""

from __future__ import annotations

import asyncio
import json
import mimetypes
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, BackgroundTasks, Depends, Header, Response
from fastapi.responses import FileResponse, RedirectResponse
from prefect.client.schemas.objects import StateType
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelling
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ourvidz.api.content import enforce_content
from ourvidz.api.dispatch import Dispatcher
from ourvidz.api.errors import ApiError, not_found
from ourvidz.api.schemas import (
    AssetOut,
    CancelResponse,
    JobRecord,
    JobStatusResponse,
    QueueJobDebug,
    QueueJobRequest,
    QueueJobResponse,
)
from ourvidz.api.security import User, with_granted_roles
from ourvidz.api.state import Gateway, gateway
from ourvidz.auth import Principal
from ourvidz.catalog import JobType, UnknownJobType, get_job_type
from ourvidz.db.models import Image, Job, Project, Video
from ourvidz.generation.request import InvalidRequest
from ourvidz.job_status import JobStatus
from ourvidz.jobs.create import NewJob, add_job, earlier_job
from ourvidz.jobs.finish import finish_job
from ourvidz.jobs.spec import requested_tier
from ourvidz.policy import ContentTier
from ourvidz.storage import InvalidStorageKey

router = APIRouter(tags=["jobs"])
GatewayDep = Annotated[Gateway, Depends(gateway)]
ERROR_TEXTS = {400: "bad parameters", 401: "no valid token", 404: "not found", 413: "body too large"}
ERRORS: dict[int | str, dict[str, Any]] = {code: {"description": text} for code, text in ERROR_TEXTS.items()}
ERRORS[429] = {"description": "rate limited"}


def owned_job(gw: Gateway, user: Principal, job_id: uuid.UUID) -> Job:
    """The job if the caller owns it or is an admin; 404 otherwise (its existence stays hidden)."""
    with gw.sessions() as session:
        job = session.get(Job, job_id)
    if job is None or (job.user_id != user.user_id and not with_granted_roles(gw, user).is_admin):
        raise not_found("job")
    return job


@router.post("/queue-job", status_code=201, response_model=QueueJobResponse, responses=ERRORS)
def queue_job(
    body: QueueJobRequest,
    response: Response,
    background: BackgroundTasks,
    user: User,
    gw: GatewayDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> QueueJobResponse:
    """Create a job and hand it to its queue's GPU workers; the answer does not wait for Prefect.

    The hot path of the API: one transaction on one pooled connection does the checks, writes the
    rows and counts the queue, so a request costs a handful of round trips and one commit.
    """
    gw.limits.hit("jobs", user.user_id, response)
    metadata = dict(body.metadata or {})
    prompt = body.prompt or metadata.pop("prompt", None)
    metadata.pop("prompt", None)
    if not isinstance(prompt, str) or not prompt.strip():
        raise ApiError(400, "MISSING_PROMPT", "a prompt is required (top level or metadata.prompt)")
    if body.num_images is not None:
        metadata["num_images"] = body.num_images
    if len(json.dumps(metadata, default=str)) > gw.settings.max_metadata_bytes:
        raise ApiError(
            400, "METADATA_TOO_LARGE", f"metadata is larger than {gw.settings.max_metadata_bytes} bytes"
        )
    try:
        job_type = get_job_type(body.job_type)
        tier = requested_tier(metadata)
    except UnknownJobType as exc:
        raise ApiError(400, "INVALID_JOB_TYPE", str(exc), {"valid": exc.valid}) from None
    except InvalidRequest as exc:
        raise ApiError(400, "INVALID_PARAMETERS", str(exc), {"field": exc.field}) from None
    try:
        with gw.sessions.begin() as session:
            (job, created), queue_length = _record_job(
                session, gw, user, body, job_type, prompt.strip(), metadata, tier, idempotency_key
            )
    except InvalidRequest as exc:
        raise ApiError(400, "INVALID_PARAMETERS", str(exc), {"field": exc.field}) from None
    except InvalidStorageKey as exc:
        raise ApiError(400, "INVALID_PARAMETERS", str(exc), {"field": "bucket"}) from None
    except IntegrityError:  # the same Idempotency-Key raced in from another request
        if (earlier := earlier_job(gw.sessions, user.user_id, idempotency_key)) is None:
            raise
        job, created = earlier
        with gw.sessions() as session:
            queue_length = _queue_length(session, job_type.queue)
    if created and gw.dispatcher is not None and gw.dispatcher.inline:
        background.add_task(gw.dispatcher.dispatch, job.id, job.job_type)
    if not created:
        response.status_code = 200
    online = None if gw.dispatcher is None else gw.dispatcher.workers_online
    return QueueJobResponse(
        job=JobRecord.of(job),
        message=_queued_message(job_type.name, online, created),
        queueLength=queue_length,
        modelVariant=job_type.model_variant,
        debug=QueueJobDebug(
            userId=user.user_id, hasPrompt=True, redisConfigured=gw.settings.redis_url is not None,
            timestamp=datetime.now(UTC), workersOnline=online, idempotentReplay=not created,
        ),
    )  # fmt: skip


def _record_job(
    session: Session,
    gw: Gateway,
    user: Principal,
    body: QueueJobRequest,
    job_type: JobType,
    prompt: str,
    metadata: dict[str, Any],
    tier: ContentTier,
    idempotency_key: str | None,
) -> tuple[NewJob, int]:
    """Ownership and content checks, the job's rows and its queue's length, in the caller's transaction."""
    _check_ownership(session, user, body)
    enforce_content(gw, user.user_id, prompt, tier, session=session)
    new = add_job(
        session,
        user_id=user.user_id,
        job_type=job_type.name,
        prompt=prompt,
        metadata=metadata,
        project_id=body.project_id,
        image_id=body.image_id,
        video_id=body.video_id,
        webhook_url=None if body.webhook_url is None else str(body.webhook_url),
        idempotency_key=idempotency_key,
        announce=gw.settings.dispatch == "dispatcher",
    )
    return new, _queue_length(session, job_type.queue)


def _queued_message(job_type: str, online: bool | None, created: bool) -> str:
    if not created:
        return "job already queued with this Idempotency-Key"
    if online is False:
        return f"{job_type} job queued; no GPU worker is online, it will start when one is"
    return f"{job_type} job queued"


def _check_ownership(session: Session, user: Principal, body: QueueJobRequest) -> None:
    for model, row_id, name in ((Project, body.project_id, "project"), (Image, body.image_id, "image"),
                                (Video, body.video_id, "video")):  # fmt: skip
        if row_id is not None:
            row = session.get(model, row_id)
            if row is None or row.user_id != user.user_id:
                raise not_found(name)


def _queue_length(session: Session, queue: str) -> int:
    """Queued and running jobs of the queue, the new one included."""
    query = select(func.count()).where(
        Job.queue == queue, Job.status.in_([JobStatus.QUEUED, JobStatus.PROCESSING])
    )
    return int(session.scalar(query) or 0)


@router.get("/jobs/{job_id}", response_model=JobStatusResponse, responses=ERRORS)
def job_status(job_id: uuid.UUID, user: User, gw: GatewayDep) -> JobStatusResponse:
    """Status, progress, files and error of one of the caller's jobs."""
    job = owned_job(gw, user, job_id)
    with gw.sessions() as session:
        images = session.scalars(
            select(Image).where(Image.job_id == job.id).order_by(Image.image_index)
        ).all()
        videos = session.scalars(select(Video).where(Video.job_id == job.id)).all()
    assets = [
        _asset("image", i.bucket, i.storage_key, i.width, i.height, i.seed, i.size_bytes) for i in images
    ]
    for video in videos:
        assets.append(_asset("video", video.bucket, video.storage_key, video.width, video.height, video.seed,
                             video.size_bytes, video.frames, video.duration_seconds))  # fmt: skip
        assets.append(
            _asset("thumbnail", video.bucket, video.thumbnail_key, video.width, video.height, video.seed)
        )
    return JobStatusResponse(
        job=JobRecord.of(job), progress=job.progress, assets=[a for a in assets if a], error=job.error_message
    )


def _asset(kind: str, bucket: str | None, key: str | None, *values: Any) -> AssetOut | None:
    if not bucket or not key:
        return None
    names = ("width", "height", "seed", "size_bytes", "frames", "duration")
    return AssetOut(
        type=kind,
        url=f"/files/{bucket}/{key}",
        bucket=bucket,
        key=key,
        **dict(zip(names, values, strict=False)),
    )


@router.post("/jobs/{job_id}/cancel", status_code=202, response_model=CancelResponse, responses=ERRORS)
async def cancel_job(job_id: uuid.UUID, user: User, gw: GatewayDep) -> CancelResponse:
    """Cancel a queued job at once, or a running one at its next generation step."""
    job = await asyncio.to_thread(owned_job, gw, user, job_id)
    if job.status.is_final:
        raise ApiError(409, "JOB_ALREADY_FINAL", f"the job is already {job.status}")
    if job.flow_run_id is not None and gw.dispatcher is not None:
        try:
            await _cancel_flow_run(gw.dispatcher, job.flow_run_id)
        except (httpx.HTTPError, ObjectNotFound) as exc:
            if job.status is not JobStatus.QUEUED:  # a running job can only be stopped through Prefect
                raise ApiError(
                    503, "ORCHESTRATOR_UNAVAILABLE", "Prefect cannot be reached; retry shortly"
                ) from exc
    if job.status is JobStatus.QUEUED:
        await asyncio.to_thread(finish_job, gw.sessions, job.id, JobStatus.CANCELLED)
        message = "job cancelled before it started"
    else:
        message = "job is cancelling; generation stops at its next step"
    job = await asyncio.to_thread(owned_job, gw, user, job_id)
    return CancelResponse(job=JobRecord.of(job), message=message)


async def _cancel_flow_run(dispatcher: Dispatcher, flow_run_id: uuid.UUID) -> None:
    run = await dispatcher.client.read_flow_run(flow_run_id)
    if run.state_type not in (StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED):
        await dispatcher.client.set_flow_run_state(flow_run_id, Cancelling(message="cancelled by user"))


@router.get("/files/{bucket}/{key:path}", responses=ERRORS, response_class=Response)
def download(bucket: str, key: str, user: User, gw: GatewayDep) -> Response:
    """A generated file, for its owner (keys start with the owner's id) or an admin."""
    owner = key.split("/", 1)[0]
    if owner != str(user.user_id) and not with_granted_roles(gw, user).is_admin:
        raise not_found("file")
    try:
        path = gw.storage.path(bucket, key)
        if not gw.storage.exists(bucket, key):
            raise not_found("file")
    except InvalidStorageKey:
        raise not_found("file") from None
    if gw.storage.is_local:
        return FileResponse(path)
    signed = gw.storage.signed_url(bucket, key)
    if signed is not None:
        return RedirectResponse(signed)
    return Response(gw.storage.get(bucket, key), media_type=mimetypes.guess_type(key)[0])
