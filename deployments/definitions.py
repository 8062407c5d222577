"""What gets deployed: one generation flow, one deployment per GPU work queue (named by
`ourvidz.orchestration.names.deployment_name`, which the dispatcher creates runs of), and the
maintenance flows on their own work pool, some on a schedule.

`prefect.yaml` describes the same deployments for `prefect deploy --all`; a test keeps the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass

from ourvidz.config import Settings
from ourvidz.orchestration.names import GENERATION_TAG, OURVIDZ_TAG

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


MAINTENANCE_DEPLOYMENT = "maintenance"  # each maintenance flow's deployment: `<flow name>/maintenance`
MAINTENANCE_QUEUE = "default"
MAINTENANCE_TAGS = (OURVIDZ_TAG, "maintenance")
MAINTENANCE_CONCURRENCY = 1  # runs of one maintenance deployment at a time
RECOVERY_FLOW_NAME = "recover-jobs"  # the flow that crash-recovery automations run


@dataclass(frozen=True, slots=True)
class MaintenanceFlow:
    """A flow deployed on the maintenance pool; `interval_seconds` None means run on demand only."""

    entrypoint: str
    interval_seconds: int | None
    description: str


MAINTENANCE_FLOWS = (
    MaintenanceFlow(
        "flows.enhancement.refresh.refresh_prompt_cache",
        300,
        "Reload prompt templates in every process when the table changed (every 5 minutes).",
    ),
    MaintenanceFlow(
        "flows.maintenance.health.check_worker_health",
        60,
        "Worker health every minute: worker_health rows, WorkerHealthUpdate events, a table artifact.",
    ),
    MaintenanceFlow(
        "flows.maintenance.recovery.recover_jobs",
        60,
        "Re-queue jobs whose flow run was lost (up to their max attempts), every minute and on a crash.",
    ),
    MaintenanceFlow(
        "flows.maintenance.webhooks.deliver_webhooks",
        30,
        "Redeliver pending job webhooks with exponential backoff until their deadline.",
    ),
    MaintenanceFlow(
        "flows.maintenance.report.daily_usage_report",
        86400,
        "Storage and usage of the last 24 hours, as a markdown artifact (daily).",
    ),
    MaintenanceFlow(
        "flows.enhancement.batch.enhance_prompts",
        None,
        "Run a list of prompts through the enhancer chain; results as a table artifact.",
    ),
)
