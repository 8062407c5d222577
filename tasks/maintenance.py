"""The tasks of the maintenance flows (`flows/maintenance/`); each calls one core function."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from ourvidz.config import get_settings
from ourvidz.db.session import sessions_for
from ourvidz.egress import policies
from ourvidz.jobs.recovery import recover_lost_jobs
from ourvidz.orchestration.names import GENERATION_TAG, MAINTENANCE_TAG
from ourvidz.orchestration.retention import prune_runs
from ourvidz.orchestration.runs import FlowRuns
from ourvidz.registry.health import observe_workers
from ourvidz.reports import usage_report
from ourvidz.webhooks import DueReport, WebhookSender, deliver_due
from tasks.retry import DB_RETRIES


@task(name="recover-lost-jobs", cache_policy=NO_CACHE, **DB_RETRIES)
async def recover() -> list[dict[str, Any]]:
    """Re-queue, fail or cancel every job whose flow run was lost, hung or cancelled; a row per action."""
    settings = get_settings()
    async with FlowRuns() as runs:
        return await recover_lost_jobs(
            sessions_for(settings.database_url), runs, timedelta(minutes=settings.stall_minutes)
        )


@task(name="check-workers", cache_policy=NO_CACHE, **DB_RETRIES)
async def check_workers() -> list[dict[str, Any]]:
    settings = get_settings()
    async with FlowRuns() as runs:
        observations = await observe_workers(
            sessions_for(settings.database_url), runs, settings.work_pool, policies(settings)[1]
        )
    return [observation.as_event() for observation in observations]


@task(name="usage-report", cache_policy=NO_CACHE, **DB_RETRIES)
def report_usage(hours: int) -> dict[str, Any]:
    return usage_report(sessions_for(get_settings().database_url), hours)


@task(name="deliver-due-webhooks", cache_policy=NO_CACHE, **DB_RETRIES)
def deliver_due_webhooks() -> DueReport:
    """Redeliver every due webhook (a retry re-checks what is due)."""
    settings = get_settings()
    sender = WebhookSender.of(settings)
    assert sender is not None
    return deliver_due(sessions_for(settings.database_url), sender)


@task(name="prune-old-runs", cache_policy=NO_CACHE)
async def prune() -> dict[str, int]:
    settings = get_settings()
    now = datetime.now(UTC)
    keep = {
        MAINTENANCE_TAG: timedelta(hours=settings.maintenance_run_retention_hours),
        GENERATION_TAG: timedelta(days=settings.generation_run_retention_days),
    }
    counts = {}
    async with FlowRuns() as runs:
        for tag, kept in keep.items():
            pruned = await prune_runs(runs.client, tag, now - kept)
            counts |= {f"{tag} runs": pruned.runs, f"{tag} artifacts": pruned.artifacts}
    return counts
