"""The stages of a generation flow run as Prefect tasks; each calls one core function of `ourvidz`."""

from __future__ import annotations

import uuid

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.config import get_settings
from ourvidz.db.session import sessions_for
from ourvidz.generation.control import Control
from ourvidz.generation.results import GenerationResult, OutputPlace
from ourvidz.job_status import JobStatus
from ourvidz.jobs.enhancement import apply_enhancement
from ourvidz.jobs.finish import finish_job
from ourvidz.jobs.outputs import record_outputs
from ourvidz.jobs.spec import JobSpec
from ourvidz.jobs.start import start_job
from ourvidz.webhooks import QUICK_RETRY_SECONDS, deliver
from ourvidz.worker.cancellation import cancel_flag
from ourvidz.worker.runtime import get_runtime
from tasks.progress import ProgressReporter
from tasks.retry import BACKOFF_SECONDS, database_unreachable
from tasks.webhooks import retry_webhook_now

DB_RETRIES = {"retries": len(BACKOFF_SECONDS), "retry_delay_seconds": BACKOFF_SECONDS}


def _sessions() -> sessionmaker[Session]:
    return sessions_for(get_settings().database_url)


def _flow_run_id() -> uuid.UUID | None:
    run_id = flow_run.get_id()
    return uuid.UUID(run_id) if run_id else None


@task(name="validate", cache_policy=NO_CACHE, retry_condition_fn=database_unreachable, **DB_RETRIES)
def validate(job_id: uuid.UUID) -> JobSpec:
    """Job exists and is queued, type known, prompt present and short enough, tier allowed."""
    return start_job(_sessions(), job_id, _flow_run_id())


@task(name="enhance", cache_policy=NO_CACHE, retry_condition_fn=database_unreachable, **DB_RETRIES)
def enhance(spec: JobSpec) -> str:
    return apply_enhancement(_sessions(), spec)


@task(name="generate", cache_policy=NO_CACHE)
async def generate(spec: JobSpec, prompt: str) -> GenerationResult:
    """Run the pipeline on this worker's device; stops between steps when the flow run is cancelled."""
    run_id = _flow_run_id()
    cancel = cancel_flag(run_id) if run_id else None
    runtime = get_runtime()
    loads_before = runtime.pipelines.total_loads
    async with ProgressReporter(spec.id, spec.user_id, spec.job_type.name) as reporter:
        result = await runtime.generate_async(
            spec.with_prompt(prompt),
            OutputPlace(bucket=spec.bucket, user_id=spec.user_id, job_id=spec.id),
            Control(progress=reporter.report, cancel=cancel),
        )
    loads = runtime.pipelines.total_loads
    get_run_logger().info(
        "pipelines loaded during this run: %d (by this process: %d)", loads - loads_before, loads
    )
    return result


@task(name="store", cache_policy=NO_CACHE, retry_condition_fn=database_unreachable, **DB_RETRIES)
def store(spec: JobSpec, result: GenerationResult, prompt: str) -> None:
    record_outputs(_sessions(), spec, result.assets, prompt)


@task(name="finish", cache_policy=NO_CACHE, retry_condition_fn=database_unreachable, **DB_RETRIES)
def finish(
    job_id: uuid.UUID, status: JobStatus, error: str | None = None, flow_run_id: uuid.UUID | None = None
) -> bool:
    return finish_job(_sessions(), job_id, status, error, flow_run_id)


@task(
    name="webhook", cache_policy=NO_CACHE, retries=len(QUICK_RETRY_SECONDS),
    retry_delay_seconds=list(QUICK_RETRY_SECONDS), retry_condition_fn=retry_webhook_now,
)  # fmt: skip
def webhook(url: str, job_id: uuid.UUID, event_type: str, payload: dict) -> int:
    """The first attempt and ~2 s of quick retries; later ones are the deliver-webhooks flow's."""
    settings = get_settings()
    assert settings.webhook_secret is not None
    return deliver(
        _sessions(), secret=settings.webhook_secret.get_secret_value(), url=url, job_id=job_id,
        event_type=event_type, payload=payload,
    )  # fmt: skip
