"""What gets deployed: one generation flow, one deployment per GPU work queue (named by
`ourvidz.orchestration.names.deployment_name`, which the dispatcher creates runs of), and the
maintenance flows on their own work pool, some on a schedule.

`prefect.yaml` describes the same deployments for `prefect deploy --all`; a test keeps the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass

from ourvidz.config import Settings
from ourvidz.orchestration.names import GENERATION_TAG, MAINTENANCE_TAG, OURVIDZ_TAG

GENERATION_ENTRYPOINT = "flows.generation.job.generate_job"
GENERATION_QUEUES = ("sdxl", "wan")
GENERATION_TAGS = (OURVIDZ_TAG, GENERATION_TAG)
# the job type an operator's run form starts with on each deployment
DEFAULT_JOB_TYPES = {"sdxl": "sdxl_image_fast", "wan": "video_fast"}


@dataclass(frozen=True, slots=True)
class QueueSpec:
    name: str
    concurrency_limit: int


def generation_queues(settings: Settings) -> list[QueueSpec]:
    return [QueueSpec(queue, settings.queue_limit(queue)) for queue in GENERATION_QUEUES]


def generation_description(queue: str) -> str:
    return f"Generation jobs of the {queue} work queue, run by the GPU workers of its pool."


MAINTENANCE_QUEUE = "default"
MAINTENANCE_TAGS = (OURVIDZ_TAG, MAINTENANCE_TAG)
MAINTENANCE_CONCURRENCY = 1  # runs of one maintenance deployment at a time
RECOVERY_DEPLOYMENT = "recover-jobs/recover-jobs"  # what crash-recovery automations run
# `<flow>/maintenance`: what earlier releases named every maintenance deployment (bootstrap removes them)
RETIRED_DEPLOYMENT = "maintenance"


@dataclass(frozen=True, slots=True)
class MaintenanceFlow:
    """A flow deployed on the maintenance pool under a name saying what it does, on an interval or a
    cron schedule (UTC), or on demand only when it has neither."""

    entrypoint: str
    name: str
    description: str
    interval_seconds: int | None = None
    cron: str | None = None


def maintenance_flows(settings: Settings) -> tuple[MaintenanceFlow, ...]:
    return (
        MaintenanceFlow(
            "flows.enhancement.refresh.refresh_prompt_cache",
            "refresh-prompt-cache",
            "Reload prompt templates in every process when the table changed (every 5 minutes).",
            interval_seconds=300,
        ),
        MaintenanceFlow(
            "flows.maintenance.health.check_worker_health",
            "check-worker-health",
            "Worker health every minute: worker_health rows, WorkerHealthUpdate events, a table artifact.",
            interval_seconds=60,
        ),
        MaintenanceFlow(
            "flows.maintenance.recovery.recover_jobs",
            "recover-jobs",
            "Re-queue jobs whose flow run was lost (up to their max attempts), every minute and on a crash.",
            interval_seconds=60,
        ),
        MaintenanceFlow(
            "flows.maintenance.webhooks.deliver_webhooks",
            "deliver-webhooks",
            "Redeliver pending job webhooks with exponential backoff until their deadline.",
            interval_seconds=30,
        ),
        MaintenanceFlow(
            "flows.maintenance.report.daily_usage_report",
            "daily-usage-report",
            "Storage and usage of the last 24 hours, as a markdown artifact (daily at "
            "OURVIDZ_USAGE_REPORT_HOUR, UTC).",
            cron=f"0 {settings.usage_report_hour} * * *",
        ),
        MaintenanceFlow(
            "flows.maintenance.retention.prune_runs",
            "prune-old-runs",
            "Delete ended runs past their retention (maintenance 24 h, generation 30 d), hourly by default",
            interval_seconds=60 * settings.prune_interval_minutes,
        ),
        MaintenanceFlow(
            "flows.enhancement.batch.enhance_prompts",
            "enhance-prompts",
            "Run a list of prompts through the enhancer chain; results as a table artifact.",
        ),
    )
