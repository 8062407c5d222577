"""Names that Prefect objects and our code must agree on."""

from __future__ import annotations

GENERATION_FLOW = "generate"  # the flow every generation job runs as
OURVIDZ_TAG = "ourvidz"  # every deployment of ours (the crash automation watches its runs' heartbeats)
GENERATION_TAG = "generation"  # generation deployments (their crashed or cancelled runs start recovery)
MAINTENANCE_TAG = "maintenance"  # maintenance deployments (their ended runs are kept a day)


def deployment_name(queue: str) -> str:
    """The `flow/deployment` name of a GPU work queue's generation deployment."""
    return f"{GENERATION_FLOW}/{queue}"


def generation_run_name(job_type: str, job_id: object) -> str:
    """What a job's flow run is called in the Prefect UI, from its creation on."""
    return f"{job_type}-{job_id}"


def generation_run_tags(job_type: str, queue: str, owner: object) -> list[str]:
    """What a job's flow run is tagged with (beside its deployment's tags), to filter runs in the UI."""
    return [job_type, f"queue:{queue}", f"owner:{owner}"]


def concurrency_limit_name(flow: str, deployment: str) -> str:
    """What a deployment's concurrency limit is called in the UI (Prefect names it `deployment:<id>`;
    a limit's name may hold no `/`)."""
    return deployment if flow in deployment else f"{flow}-{deployment}"
