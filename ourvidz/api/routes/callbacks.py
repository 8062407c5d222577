"""Status updates from workers outside Prefect (the seed system's `job-callback`).

The caller signs `"<timestamp>.<body>"` with HMAC-SHA256 and the shared callback secret:
`x-ourvidz-timestamp: <unix seconds>`, `x-ourvidz-signature: v1=<hex>`. Old timestamps and signatures
seen before are refused, so a captured request cannot be replayed; the comparison is constant-time.
Updates obey the job life cycle; delivering the same update twice changes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select

from ourvidz.api.errors import ApiError, not_found
from ourvidz.api.schemas import CallbackResponse, JobCallbackRequest, JobRecord
from ourvidz.api.state import Gateway, gateway
from ourvidz.db.models import Image, Job, Video
from ourvidz.job_status import IllegalTransition, JobStatus
from ourvidz.storage import InvalidStorageKey, validate_key

router = APIRouter(tags=["workers"])
TIMESTAMP_HEADER, SIGNATURE_HEADER = "x-ourvidz-timestamp", "x-ourvidz-signature"


def sign_callback(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header value a worker sends with `body` at `timestamp`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


async def verified_body(request: Request, gw: Annotated[Gateway, Depends(gateway)]) -> bytes:
    body = await request.body()
    stamp, signature = request.headers.get(TIMESTAMP_HEADER), request.headers.get(SIGNATURE_HEADER)
    if not stamp or not signature:
        raise ApiError(401, "UNAUTHORIZED", f"{TIMESTAMP_HEADER} and {SIGNATURE_HEADER} are required")
    if not stamp.isdigit() or abs(time.time() - int(stamp)) > gw.settings.callback_tolerance_seconds:
        raise ApiError(401, "STALE_CALLBACK", "the callback timestamp is outside the tolerance window")
    secret = gw.settings.callback_secret
    assert secret is not None
    if not hmac.compare_digest(sign_callback(secret.get_secret_value(), int(stamp), body), signature):
        raise ApiError(401, "INVALID_SIGNATURE", "the callback signature does not match")
    if not gw.replays.first_time(signature):
        raise ApiError(401, "REPLAYED_CALLBACK", "this signed callback was already received")
    return body


@router.post("/job-callback", response_model=CallbackResponse)
def job_callback(
    body: Annotated[bytes, Depends(verified_body)], gw: Annotated[Gateway, Depends(gateway)]
) -> CallbackResponse:
    """Record a worker's processing / completed / failed report for a job."""
    update = JobCallbackRequest.model_validate_json(body)
    with gw.sessions.begin() as session:
        job = session.get(Job, update.job_id, with_for_update=True)
        if job is None:
            raise not_found("job")
        target = JobStatus(update.status)
        if job.status is target:
            return CallbackResponse(job=JobRecord.of(job), message=f"job already {target}; nothing changed")
        try:
            if target.is_final and job.status is JobStatus.QUEUED:
                job.transition_to(JobStatus.PROCESSING)  # the worker reported only its result
            job.transition_to(target, error=update.error_message if target is JobStatus.FAILED else None)
        except IllegalTransition as exc:
            raise ApiError(409, "ILLEGAL_TRANSITION", str(exc)) from None
        if update.enhanced_prompt:
            job.enhanced_prompt = update.enhanced_prompt
        if update.metadata:
            job.meta = {**(job.meta or {}), "callback": update.metadata}
        if target is JobStatus.COMPLETED:
            _record_files(session, job, _locations(update))
        return CallbackResponse(job=JobRecord.of(job), message=f"job {target}")


def _locations(update: JobCallbackRequest) -> list[dict[str, Any]]:
    """Every reported file as `{type, location, ...}`, whichever spelling the worker used."""
    files: list[dict[str, Any]] = []
    for path in [*([update.file_path] if update.file_path else []), *(update.image_urls or [])]:
        files.append({"type": "image", "location": path})
    if update.output_url:
        files.append({"type": "video", "location": update.output_url})
    for asset in update.assets or []:
        location = asset.get("key") or asset.get("url") or asset.get("path")
        if isinstance(location, str):
            files.append({**asset, "type": asset.get("type", "image"), "location": location})
    return files


def _record_files(session: Any, job: Job, files: list[dict[str, Any]]) -> None:
    images = [f for f in files if f["type"] == "image"]
    videos = [f for f in files if f["type"] == "video"]
    existing = {i.image_index: i for i in session.scalars(select(Image).where(Image.job_id == job.id))}
    for index, file in enumerate(images):
        image = existing.get(index) or Image(user_id=job.user_id, job_id=job.id, image_index=index)
        session.add(image)
        _place(image, job, file)
        session.flush()
        if index == 0:
            job.image_id = image.id
    for file in videos[:1]:
        video = (session.get(Video, job.video_id) if job.video_id else None) or Video(user_id=job.user_id)
        video.job_id = job.id
        session.add(video)
        _place(video, job, file)
        session.flush()
        job.video_id = video.id


def _place(row: Image | Video, job: Job, file: dict[str, Any]) -> None:
    """A storage key stays a key in the job's bucket; anything else (a URL) is kept as given."""
    location = str(file["location"])
    try:
        row.storage_key, row.bucket = validate_key(location), file.get("bucket") or job.job_type
    except InvalidStorageKey:
        row.meta = {**(row.meta or {}), "url": location}
    row.status = "completed"
    for name in ("width", "height", "seed", "size_bytes"):
        if isinstance(file.get(name), int):
            setattr(row, name, file[name])
