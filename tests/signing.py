"""Signing a worker's `job-callback` the way workers outside Prefect do (Standard Webhooks)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

from ourvidz.api.routes.callbacks import callback_webhook


def callback_headers(
    secret: str, body: bytes, *, at: int | None = None, message_id: str | None = None
) -> dict[str, str]:
    """Standard Webhooks headers for `body`: a new message id each call unless `message_id` is given (a
    worker's retry of one report keeps its id, and is refused as a replay once the first arrived)."""
    stamp = int(time.time()) if at is None else at
    message_id = message_id or f"msg_{uuid.uuid4().hex}"
    signature = callback_webhook(secret).sign(message_id, datetime.fromtimestamp(stamp, UTC), body.decode())
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": signature,
        "content-type": "application/json",
    }
