"""Handing a queued job to the generation deployment of its queue.

The job id is the flow run's idempotency key, so dispatching twice (a retry, a restarted gateway)
never starts a second run. `timeout=0`: dispatch returns as soon as the run is scheduled.
"""

from __future__ import annotations

import uuid

from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.catalog import get_job_type
from ourvidz.db.models import Job

GENERATION_FLOW_NAME = "generate"


def deployment_name(queue: str) -> str:
    """The `flow/deployment` name of a queue's generation deployment."""
    return f"{GENERATION_FLOW_NAME}/{queue}"


async def dispatch_job(sessions: sessionmaker[Session], job_id: uuid.UUID, job_type: str) -> FlowRun:
    """Create the job's flow run (once) and link it from the job row."""
    queue = get_job_type(job_type).queue
    flow_run = await run_deployment(
        deployment_name(queue),
        parameters={"job_id": str(job_id), "job_type": job_type},
        timeout=0,
        idempotency_key=str(job_id),
        as_subflow=False,
    )
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(flow_run_id=flow_run.id))
    return flow_run
