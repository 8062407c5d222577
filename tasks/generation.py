"""The tasks of the generation flow (`flows/generation/job.py`); each calls one core function."""

from __future__ import annotations

import asyncio
import uuid

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.config import get_settings
from ourvidz.db.session import sessions_for
from ourvidz.generation.control import Control
from ourvidz.generation.results import GenerationResult, OutputPlace
from ourvidz.job_status import JobStatus
from ourvidz.jobs import conclude as conclusion
from ourvidz.jobs.create import JobRequest, create_job
from ourvidz.jobs.enhancement import apply_enhancement
from ourvidz.jobs.errors import Failure
from ourvidz.jobs.outputs import Output
from ourvidz.jobs.progress import ProgressReporter
from ourvidz.jobs.references import ReferenceRules, with_references
from ourvidz.jobs.spec import JobSpec
from ourvidz.jobs.start import start_job
from ourvidz.orchestration.artifacts import ProgressArtifact
from ourvidz.orchestration.runs import current_run_id
from ourvidz.worker.cancellation import cancel_flag
from ourvidz.worker.runtime import get_runtime
from tasks.retry import DB_RETRIES


def _sessions() -> sessionmaker[Session]:
    return sessions_for(get_settings().database_url)


@task(name="create", cache_policy=NO_CACHE, **DB_RETRIES)
def create(request: JobRequest) -> uuid.UUID:
    """The job of a run started from Prefect with a prompt, checked as the gateway checks one."""
    settings = get_settings()
    return create_job(
        _sessions(), request, settings.max_metadata_bytes, rules=ReferenceRules.of(settings)
    ).job.id


@task(name="validate", cache_policy=NO_CACHE, **DB_RETRIES)
def validate(job_id: uuid.UUID) -> JobSpec:
    """Job exists and is queued, type known, prompt present and short enough, tier allowed."""
    return start_job(_sessions(), job_id, current_run_id())


@task(name="enhance", cache_policy=NO_CACHE, **DB_RETRIES)
def enhance(spec: JobSpec) -> str:
    return apply_enhancement(_sessions(), spec)


@task(name="generate", cache_policy=NO_CACHE)
async def generate(spec: JobSpec, prompt: str, progress: ProgressArtifact) -> GenerationResult:
    """Run the pipeline on this worker's device; stops between steps when the flow run is cancelled.
    `progress`: the run's progress bar, which the flow fills up once the job is complete."""
    run_id = current_run_id()
    cancel = cancel_flag(run_id) if run_id else None
    runtime = get_runtime()
    loads_before = runtime.pipelines.total_loads
    reporter = ProgressReporter(_sessions(), spec.id, spec.user_id, spec.job_type.name, artifact=progress)
    async with reporter:
        request = await asyncio.to_thread(
            with_references,
            runtime.storage,
            spec.with_prompt(prompt),
            spec.img2img,
            ReferenceRules.of(get_settings()),
        )
        result = await runtime.generate_async(
            request,
            OutputPlace(bucket=spec.bucket, user_id=spec.user_id, job_id=spec.id),
            Control(progress=reporter.report, cancel=cancel, waiting=reporter.waiting),
        )
    loads = runtime.pipelines.total_loads
    get_run_logger().info(
        "pipelines loaded during this run: %d (by this process: %d)", loads - loads_before, loads
    )
    return result


@task(name="conclude", cache_policy=NO_CACHE, **DB_RETRIES)
def conclude(
    spec: JobSpec,
    status: JobStatus,
    failure: Failure | None = None,
    outputs: list[Output] | None = None,
    prompt: str | None = None,
) -> bool:
    """End the job this run owns and announce it; False if the job was no longer this run's."""
    ended = conclusion.conclude(
        _sessions(), spec.id, status, failure=failure, outputs=outputs or [], prompt=prompt,
        run_id=spec.flow_run_id,
    )  # fmt: skip
    return ended is not None
