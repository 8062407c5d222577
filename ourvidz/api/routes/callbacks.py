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
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from ourvidz.api.deps import GatewayDep
from ourvidz.api.errors import ApiError
from ourvidz.api.schemas import CallbackResponse, JobCallbackRequest, JobRecord
from ourvidz.jobs.callbacks import apply_report

router = APIRouter(tags=["workers"])
TIMESTAMP_HEADER, SIGNATURE_HEADER = "x-ourvidz-timestamp", "x-ourvidz-signature"


def sign_callback(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header value a worker sends with `body` at `timestamp`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


async def verified_body(request: Request, gw: GatewayDep) -> bytes:
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
def job_callback(body: Annotated[bytes, Depends(verified_body)], gw: GatewayDep) -> CallbackResponse:
    """Record a worker's processing / completed / failed report for a job."""
    applied = apply_report(gw.sessions, JobCallbackRequest.model_validate_json(body).report(), gw.announcer)
    return CallbackResponse(job=JobRecord.of(applied.job), message=applied.message)
