"""Status updates from workers outside Prefect (the seed system's `job-callback`).

A callback is trusted when it is signed per Standard Webhooks with the callback secret (`webhook-id`,
`webhook-timestamp`, `webhook-signature`: verified by `standardwebhooks`), or, deprecated and accepted
for one more release, with the earlier `x-ourvidz-timestamp` / `x-ourvidz-signature: v1=<hex>` HMAC of
`"<timestamp>.<body>"`. Timestamps outside the tolerance window and a message seen before are refused,
so a captured callback cannot be replayed. The seed's own workers sign nothing and send the service key
as a bearer token: accepted too, where a service key is set. The body is parsed only after that
check, with bounded lists and strings; every malformed field is a 400. Updates obey the job life
cycle; delivering the same update twice changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from ourvidz.api.deps import Gateway, GatewayDep, bearer_token, has_service_key
from ourvidz.api.errors import ApiError
from ourvidz.api.schemas.callbacks import CallbackResponse, JobCallbackRequest
from ourvidz.api.schemas.jobs import JobRecord
from ourvidz.jobs.callbacks import apply_report
from ourvidz.orchestration.runs import PrefectUnavailable

logger = logging.getLogger(__name__)
router = APIRouter(tags=["workers"])
# The body is read raw (its signature is checked first), so its schema is declared by hand; the models it
# refers to go into the document's components (`SCHEMAS`, added by the app).
_BODY_SCHEMA = JobCallbackRequest.model_json_schema(ref_template="#/components/schemas/{model}")
SCHEMAS = _BODY_SCHEMA.pop("$defs", {}) | {"JobCallbackRequest": _BODY_SCHEMA}
_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/JobCallbackRequest"}},
}}}  # fmt: skip
TIMESTAMP_HEADER, SIGNATURE_HEADER = "x-ourvidz-timestamp", "x-ourvidz-signature"  # deprecated
WEBHOOK_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


def callback_webhook(secret: str) -> Webhook:
    """The Standard Webhooks signer of callbacks: a `whsec_<base64>` secret as such, any other string
    as the key's bytes."""
    return Webhook(secret if secret.startswith("whsec_") else secret.encode())


def sign_callback(secret: str, timestamp: int, body: bytes) -> str:
    """The deprecated `x-ourvidz-signature` value of `body` at `timestamp`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


async def verified_body(request: Request, gw: GatewayDep) -> bytes:
    body = await request.body()
    if all(request.headers.get(name) for name in WEBHOOK_HEADERS):
        _check_standard(gw, request, body)
    elif request.headers.get(TIMESTAMP_HEADER) or request.headers.get(SIGNATURE_HEADER):
        _check_legacy(gw, request, body)
    elif not _holds_service_key(gw, request):
        raise ApiError(
            401, "UNAUTHORIZED", "sign the callback (webhook-id, webhook-timestamp, webhook-signature) "
            "or send the service key",
        )  # fmt: skip
    return body


def _check_standard(gw: Gateway, request: Request, body: bytes) -> None:
    message_id, stamp = request.headers["webhook-id"], request.headers["webhook-timestamp"]
    _check_fresh(gw, stamp)
    try:
        callback_webhook(_secret(gw)).verify(body, dict(request.headers), json_parse=False)
    except (WebhookVerificationError, ValueError):  # a malformed signature header is a ValueError
        raise ApiError(401, "INVALID_SIGNATURE", "the callback signature does not match") from None
    _check_first_time(gw, f"id:{message_id}")


def _check_legacy(gw: Gateway, request: Request, body: bytes) -> None:
    stamp, signature = request.headers.get(TIMESTAMP_HEADER), request.headers.get(SIGNATURE_HEADER)
    if not stamp or not signature:
        raise ApiError(401, "UNAUTHORIZED", f"{TIMESTAMP_HEADER} and {SIGNATURE_HEADER} are required")
    _check_fresh(gw, stamp)
    if not hmac.compare_digest(sign_callback(_secret(gw), int(stamp), body).encode(), signature.encode()):
        raise ApiError(401, "INVALID_SIGNATURE", "the callback signature does not match")
    logger.info("job-callback signed with the deprecated %s header", SIGNATURE_HEADER)
    _check_first_time(gw, signature)


def _check_fresh(gw: Gateway, stamp: str) -> None:
    if not stamp.isdigit() or abs(time.time() - int(stamp)) > gw.settings.callback_tolerance_seconds:
        raise ApiError(401, "STALE_CALLBACK", "the callback timestamp is outside the tolerance window")


def _check_first_time(gw: Gateway, seen: str) -> None:
    if not gw.replays.first_time(seen):
        raise ApiError(401, "REPLAYED_CALLBACK", "this signed callback was already received")


def _holds_service_key(gw: Gateway, request: Request) -> bool:
    """The seed's workers: `Authorization: Bearer <service key>` (or our `x-service-key` header)."""
    key = gw.settings.service_key
    token = bearer_token(request)
    if (
        key is not None
        and token is not None
        and hmac.compare_digest(token.encode(), key.get_secret_value().encode())
    ):
        return True
    return has_service_key(request, gw)


def _secret(gw: Gateway) -> str:
    secret = gw.settings.callback_secret
    assert secret is not None
    return secret.get_secret_value()


@router.post("/job-callback", response_model=CallbackResponse, openapi_extra=_BODY)
async def job_callback(body: Annotated[bytes, Depends(verified_body)], gw: GatewayDep) -> CallbackResponse:
    """Record a worker's processing / completed / failed report for a job; a processing report makes
    the worker the job's runner (and renews its lease), and the flow run the job had is cancelled."""
    report = JobCallbackRequest.model_validate_json(body).report()
    lease = timedelta(seconds=gw.settings.runner_lease_seconds)
    job, message, detached = await asyncio.to_thread(apply_report, gw.sessions, report, gw.announcer, lease)
    if detached is not None:  # a run that starts anyway finds the job taken and does nothing
        with contextlib.suppress(PrefectUnavailable):
            await gw.runs.cancel(detached, f"its job is run by worker {job.runner}")
    return CallbackResponse(job=JobRecord.of(job), message=message, jobId=job.id, status=job.status)
