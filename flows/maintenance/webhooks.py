"""Scheduled webhook redelivery: every due webhook gets its next attempt, so a receiver that was down
still gets each job event, once per webhook id, until the deadline (schedule in `ourvidz.webhooks`).

The generation flow makes the first attempt and leaves failures pending; this flow, run every 30 s on
the maintenance pool, does the rest without holding a GPU flow run.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import acreate_markdown_artifact

from ourvidz.webhooks import Attempt
from tasks.maintenance import deliver_due_webhooks

ARTIFACT_KEY = "webhook-deliveries"
MAX_ARTIFACT_ROWS = 50


@flow(name="deliver-webhooks")
async def deliver_webhooks() -> dict[str, Any]:
    """Redeliver what is due; returns the counts (delivered, pending, given_up, skipped, ...).

    The artifact is written only by runs that made or deferred attempts, so an idle schedule adds none.
    """
    report = deliver_due_webhooks()
    counts = report.counts()
    if report.attempts or report.left_for_next_run:
        await acreate_markdown_artifact(
            key=ARTIFACT_KEY, markdown=_markdown(counts, report.attempts), description="Webhook redelivery"
        )
    return counts


def _markdown(counts: dict[str, int], attempts: list[Attempt]) -> str:
    lines = [
        f"**Webhooks**: {counts['delivered']} delivered, {counts['pending']} still pending, "
        f"{counts['given_up']} given up, {counts['skipped']} skipped, "
        f"{counts['left_for_next_run']} left for the next run",
    ]
    if attempts:
        lines += ["", "| webhook id | job | attempt | result |", "|---|---|---|---|"]
        lines += [
            f"| `{a.webhook_id}` | {a.job_id} | {a.attempt} | "
            f"{'delivered' if a.succeeded else 'failed'}: {str(a.status_code or a.error).replace('|', '/')} |"
            for a in attempts[:MAX_ARTIFACT_ROWS]
        ]
    return "\n".join(lines)
