"""Jobs: queue one, read its status and files, cancel it. A user only ever sees their own jobs."""

from __future__ import annotations

import asyncio
import mimetypes
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import FileResponse, RedirectResponse

from ourvidz.api.deps import (
    BearerScheme,
    Gateway,
    GatewayDep,
    User,
    bearer_token,
    owned_job,
    principal_from_token,
    with_granted_roles,
)
from ourvidz.api.errors import ApiError, not_found
from ourvidz.api.schemas.jobs import (
    AssetOut,
    CancelResponse,
    JobRecord,
    JobStatusResponse,
    QueueJobDebug,
    QueueJobRequest,
    QueueJobResponse,
)
from ourvidz.auth import Principal
from ourvidz.catalog import get_job_type
from ourvidz.jobs.cancel import cancel_job
from ourvidz.jobs.create import accept_job
from ourvidz.jobs.view import stored_files
from ourvidz.links import link_opens
from ourvidz.storage import InvalidStorageKey

router = APIRouter(tags=["jobs"])
ERROR_TEXTS = {400: "bad parameters", 401: "no valid token", 404: "not found", 413: "body too large"}
ERRORS: dict[int | str, dict[str, Any]] = {code: {"description": text} for code, text in ERROR_TEXTS.items()}
ERRORS[429] = {"description": "rate limited"}
CONTENT_ERRORS = ERRORS | {
    403: {"description": "refused by the content gate (CONTENT_PROHIBITED, CONTENT_TIER_NOT_ALLOWED)"},
    503: {"description": "a content check cannot answer (CONTENT_CHECK_UNAVAILABLE) or the database is down"},
}


@router.post("/queue-job", status_code=201, response_model=QueueJobResponse, responses=CONTENT_ERRORS)
def queue_job(
    body: QueueJobRequest,
    response: Response,
    user: User,
    gw: GatewayDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> QueueJobResponse:
    """Record a job for its queue's GPU workers; the answer does not wait for Prefect (the dispatcher,
    woken by the job's commit, creates its flow run)."""
    gw.limits.hit("jobs", user.user_id, response)
    return queued_answer(gw, user, body, response, idempotency_key)


def queued_answer(
    gw: Gateway, user: Principal, body: QueueJobRequest, response: Response, idempotency_key: str | None
) -> QueueJobResponse:
    """Record the job a request asks for and answer in the spec's shape (queue-job, admin images)."""
    request = body.job_request(user.user_id, idempotency_key)
    accepted = accept_job(
        gw.sessions, request, gw.settings.max_metadata_bytes, gw.policy(),
        rules=gw.rules,
    )  # fmt: skip
    if not accepted.created:
        response.status_code = 200
    online = gw.pool.online
    job_type = get_job_type(accepted.job.job_type)
    return QueueJobResponse(
        job=JobRecord.of(accepted.job),
        message=_queued_message(job_type.name, online, accepted.created),
        queueLength=accepted.queue_length,
        modelVariant=job_type.model_variant,
        debug=QueueJobDebug(
            userId=user.user_id, hasPrompt=True, redisConfigured=gw.settings.redis_url is not None,
            timestamp=datetime.now(UTC), workersOnline=online, idempotentReplay=not accepted.created,
        ),
        jobId=accepted.job.id, status=accepted.job.status, queueName=f"{job_type.queue}_queue",
    )  # fmt: skip


def _queued_message(job_type: str, online: bool | None, created: bool) -> str:
    if not created:
        return "job already queued with this Idempotency-Key"
    if online is False:
        return f"{job_type} job queued; no GPU worker is online, it will start when one is"
    return f"{job_type} job queued"


@router.get("/jobs/{job_id}", response_model=JobStatusResponse, responses=ERRORS)
def job_status(job_id: uuid.UUID, user: User, gw: GatewayDep) -> JobStatusResponse:
    """Status, progress, files and error of one of the caller's jobs."""
    job = owned_job(gw, user, job_id)
    assets = [AssetOut.of(file) for file in stored_files(gw.sessions, job.id)]
    return JobStatusResponse(
        job=JobRecord.of(job), progress=job.progress, assets=assets, error=job.error_message
    )


@router.post("/jobs/{job_id}/cancel", status_code=202, response_model=CancelResponse, responses=ERRORS)
async def cancel(job_id: uuid.UUID, user: User, gw: GatewayDep) -> CancelResponse:
    """Cancel a queued job at once, or a running one at its next generation step (409 if final)."""
    await asyncio.to_thread(owned_job, gw, user, job_id)
    cancelled = await cancel_job(gw.sessions, gw.runs, job_id, gw.announcer)
    return CancelResponse(job=JobRecord.of(cancelled.job), message=cancelled.message)


@router.get("/files/{bucket}/{key:path}", responses=ERRORS, response_class=Response)
def download(
    bucket: str,
    key: str,
    request: Request,
    gw: GatewayDep,
    _bearer: BearerScheme,
    token: Annotated[str | None, Query(description="A file link's token, instead of a user's.")] = None,
) -> Response:
    """A generated file, for its owner (keys start with the owner's id) or an admin; or for whoever
    follows a link to it that the gateway signed (the pictures on a job's run page in the Prefect UI)."""
    if token is not None:
        if not link_opens(gw.settings, token, bucket, key):
            raise ApiError(401, "INVALID_TOKEN", "the file link is invalid or expired")
    else:
        user = principal_from_token(gw, bearer_token(request))
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
