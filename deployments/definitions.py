"""What gets deployed: one generation flow, one deployment per GPU work queue (named by
`ourvidz.api.dispatch.deployment_name`, which the gateway dispatches to).

`prefect.yaml` describes the same deployments for `prefect deploy --all`; a test keeps the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass

from ourvidz.config import Settings

GENERATION_ENTRYPOINT = "flows.generation.job.generate_job"
GENERATION_QUEUES = ("sdxl", "wan")
GENERATION_TAGS = ("ourvidz", "generation")


@dataclass(frozen=True, slots=True)
class QueueSpec:
    name: str
    concurrency_limit: int


def generation_queues(settings: Settings) -> list[QueueSpec]:
    limits = {"sdxl": settings.sdxl_concurrency, "wan": settings.wan_concurrency}
    return [QueueSpec(queue, limits[queue]) for queue in GENERATION_QUEUES]


def generation_description(queue: str) -> str:
    return f"Generation jobs of the {queue} work queue, run by the GPU workers of its pool."
