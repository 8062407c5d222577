"""Outgoing job webhooks, signed per Standard Webhooks, each attempt recorded in webhook_deliveries.

The webhook id stays the same across retries so a receiver can drop duplicates; the signature
covers id, timestamp and body, so a receiver can reject replays and tampering.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks.webhooks import Webhook

from ourvidz.db.models import WebhookDelivery

TIMEOUT_SECONDS = 10.0
MAX_RESPONSE_CHARS = 1000


class WebhookFailed(RuntimeError):
    """The receiver did not answer 2xx; the caller retries with backoff."""


def webhook_id_for(job_id: uuid.UUID, event_type: str) -> str:
    """Stable per job and event, so every retry carries the same id."""
    return f"msg_{uuid.uuid5(job_id, event_type).hex}"


def signed_request(secret: str, webhook_id: str, payload: dict[str, Any]) -> tuple[str, dict[str, str]]:
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True)
    now = datetime.now(UTC)
    headers = {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(webhook_id, now, body),
    }
    return body, headers


def deliver(
    sessions: sessionmaker[Session],
    *,
    secret: str,
    url: str,
    job_id: uuid.UUID,
    event_type: str,
    payload: dict[str, Any],
) -> int:
    """POST one attempt and record it; returns the status code, raises `WebhookFailed` unless 2xx."""
    webhook_id = webhook_id_for(job_id, event_type)
    body, headers = signed_request(secret, webhook_id, payload)
    status, response, error = None, None, None
    try:
        answer = httpx.post(url, content=body, headers=headers, timeout=TIMEOUT_SECONDS)
        status, response = answer.status_code, answer.text[:MAX_RESPONSE_CHARS]
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    succeeded = status is not None and 200 <= status < 300
    with sessions.begin() as session:
        attempt = 1 + (
            session.scalar(select(func.count()).where(WebhookDelivery.webhook_id == webhook_id)) or 0
        )
        session.add(
            WebhookDelivery(
                webhook_id=webhook_id, job_id=job_id, url=url, event_type=event_type, payload=payload,
                attempt=attempt, status_code=status, response_body=response, error=error, succeeded=succeeded,
            )
        )  # fmt: skip
    if not succeeded:
        raise WebhookFailed(f"webhook to {url} failed: {error or f'HTTP {status}'}")
    return status
