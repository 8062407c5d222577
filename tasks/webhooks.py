"""Webhook delivery tasks: the quick retry rule of the callback stage and the due-delivery pass."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ourvidz.config import get_settings
from ourvidz.db.session import sessions_for
from ourvidz.webhooks import WebhookFailed, deliver_due
from tasks.retry import BACKOFF_SECONDS, database_unreachable


def retry_webhook_now(_task: Any, _task_run: Any, state: Any) -> bool:
    """Quick retries only after a receiver refusal: a timeout would hold the flow run another 10 s."""
    error = state.result(raise_on_failure=False)
    return isinstance(error, WebhookFailed) and not error.timed_out


@task(
    name="deliver-due-webhooks", cache_policy=NO_CACHE, retry_condition_fn=database_unreachable,
    retries=len(BACKOFF_SECONDS), retry_delay_seconds=BACKOFF_SECONDS,
)  # fmt: skip
def deliver_due_webhooks() -> dict[str, Any]:
    """Redeliver every due webhook; counts and the attempts made (a retry re-checks what is due)."""
    settings = get_settings()
    assert settings.webhook_secret is not None
    report = deliver_due(sessions_for(settings.database_url), settings.webhook_secret.get_secret_value())
    if report.left_for_next_run:
        get_run_logger().warning("%d due webhook(s) left for the next run", report.left_for_next_run)
    attempts = [
        {"webhook_id": a.webhook_id, "job_id": str(a.job_id), "url": a.url, "event": a.event_type,
         "attempt": a.attempt, "result": a.status_code or a.error, "succeeded": a.succeeded}
        for a in report.attempts
    ]  # fmt: skip
    return {**report.counts(), "attempts": attempts}
