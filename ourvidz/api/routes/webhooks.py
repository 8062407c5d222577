"""Outgoing webhook deliveries for admins: what was sent where, what is pending, and redelivery."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel

from ourvidz.api.deps import Admin, GatewayDep
from ourvidz.api.errors import not_found
from ourvidz.webhooks import Attempt, DeliveryStatus, History, list_deliveries, redeliver

router = APIRouter(tags=["webhooks"])
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "bad parameters"}, 401: {"description": "no valid token"},
    403: {"description": "not an admin"}, 404: {"description": "unknown webhook id"},
}  # fmt: skip
WEBHOOK_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"  # ids are `msg_<hex>`; anything else cannot match
WebhookId = Annotated[str, Path(pattern=WEBHOOK_ID_PATTERN)]


class WebhookDeliveryOut(BaseModel):
    """One webhook id (one job event): its status, schedule, payload and every attempt, oldest first."""

    webhook_id: str
    job_id: uuid.UUID | None
    event_type: str
    url: str
    status: DeliveryStatus
    attempt_count: int
    first_attempt_at: datetime
    last_attempt_at: datetime
    next_attempt_at: datetime | None  # only while pending
    payload: dict[str, Any]
    attempts: list[Attempt]  # the core's record of each attempt, served as is

    @classmethod
    def of(cls, history: History, now: datetime) -> WebhookDeliveryOut:
        delivery = history.delivery
        status = delivery.status(now)
        return cls(
            webhook_id=delivery.webhook_id, job_id=delivery.job_id, event_type=delivery.event_type,
            url=history.url, status=status, attempt_count=delivery.attempts,
            first_attempt_at=delivery.first_at, last_attempt_at=delivery.last_at,
            next_attempt_at=delivery.next_attempt_at if status is DeliveryStatus.PENDING else None,
            payload=history.payload, attempts=history.attempts,
        )  # fmt: skip


class WebhookDeliveriesResponse(BaseModel):
    deliveries: list[WebhookDeliveryOut]
    count: int


@router.get("/webhook-deliveries", response_model=WebhookDeliveriesResponse, responses=ERRORS)
def webhook_deliveries(
    _admin: Admin,
    gw: GatewayDep,
    job_id: uuid.UUID | None = None,
    webhook_id: Annotated[str | None, Query(pattern=WEBHOOK_ID_PATTERN)] = None,
    status: DeliveryStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> WebhookDeliveriesResponse:
    """Outgoing webhooks, one entry per webhook id (a job event), the most recently attempted first.

    Each entry has its status (`succeeded`: a 2xx came back; `pending`: another automatic attempt is
    scheduled, at `next_attempt_at`; `failed`: no 2xx and the 1 h deadline has passed), the payload
    and its attempts oldest first. Filters: `job_id`, `webhook_id`, `status`; `limit` 1-500 entries.
    """
    now = datetime.now(UTC)
    histories = list_deliveries(
        gw.sessions, job_id=job_id, webhook_id=webhook_id, status=status, limit=limit, now=now
    )
    deliveries = [WebhookDeliveryOut.of(history, now) for history in histories]
    return WebhookDeliveriesResponse(deliveries=deliveries, count=len(deliveries))


@router.post("/webhook-deliveries/{webhook_id}/redeliver", response_model=Attempt, responses=ERRORS)
def redeliver_webhook(webhook_id: WebhookId, _admin: Admin, gw: GatewayDep) -> Attempt:
    """Send the stored event again now, under the same webhook id, with a fresh timestamp and signature.

    Also after a success or past the deadline (receivers drop duplicates by webhook id). Answers 200
    with the new attempt whether or not the receiver accepted it (see `succeeded`); it does not
    restart the automatic schedule.
    """
    sender = gw.announcer.sender
    assert sender is not None
    attempt = redeliver(gw.sessions, sender, webhook_id)
    if attempt is None:
        raise not_found("webhook delivery")
    return attempt
