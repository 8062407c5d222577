"""One flow run per generation job: (create) -> validate -> enhance -> generate -> conclude.

Runs come from the dispatcher (a job recorded by the gateway: `job_id`; the run is named
`<job_type>-<job_id>` at creation) or from an operator in the Prefect UI or CLI, with the job's fields
instead of a `job_id`: the run then creates the job through the same checks the gateway makes, owned
by `user_id` or the operator profile, and runs it. A request that cannot run fails the run at once
with its code (`INVALID_JOB_TYPE: ...`), never a retry.

The job row is the source of truth and always ends final: completed, failed (with the error) or
cancelled, each ending announced once by `ourvidz.jobs.conclude`. The flow run ends in the matching
Prefect state, so the UI and the database agree. Generation is never retried here (a failed
generation fails the job); database steps retry.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from typing import Any

from prefect import flow, get_run_logger
from prefect.settings import get_current_settings
from prefect.states import Cancelled, Completed, Failed, State

from ourvidz.catalog import UnknownJobType, get_job_type
from ourvidz.config import get_settings
from ourvidz.generation.control import Cancelled as GenerationCancelled
from ourvidz.generation.results import GenerationResult
from ourvidz.job_status import JobStatus
from ourvidz.jobs.create import OPERATOR_USER_ID, JobRequest
from ourvidz.jobs.errors import Failure, InvalidJob, JobError, NotFound
from ourvidz.jobs.outputs import outputs_of
from ourvidz.jobs.spec import JobSpec
from ourvidz.jobs.start import JobNotRunnable, JobRejected
from ourvidz.links import file_link
from ourvidz.orchestration.artifacts import (
    JobSummary,
    ProgressArtifact,
    ShownFile,
    show_outputs,
    show_summary,
)
from ourvidz.orchestration.names import GENERATION_FLOW
from ourvidz.orchestration.runs import FlowRuns, current_deployment, current_run_id
from ourvidz.policy import PolicyError
from ourvidz.storage import Storage
from tasks.generation import conclude, create, enhance, generate, validate

# Naming the result storage spares each run and task a read of the server's default storage: results
# of this flow are never persisted (the job database holds them).
NO_RESULTS = get_current_settings().results.local_storage_path


@flow(name=GENERATION_FLOW, retries=0, persist_result=False, result_storage=NO_RESULTS)
async def generate_job(
    job_type: str = "",
    prompt: str = "",
    negative_prompt: str = "",
    num_images: int | None = None,
    seed: int | None = None,
    width: int | None = None,
    height: int | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    frames: int | None = None,
    content_tier: str | None = None,
    user_id: uuid.UUID | None = None,
    webhook_url: str | None = None,
    job_id: uuid.UUID | None = None,
) -> State[Any]:
    """Generate the files of a job: the one `job_id` names, or a new one made of the other parameters.

    Args:
        job_type: sdxl_image_fast or sdxl_image_high on generate/sdxl; image_fast, image_high,
            video_fast, video_high and their image7b_/video7b_ enhanced twins on generate/wan.
        prompt: What to generate (a new job).
        negative_prompt: What to keep out of the picture.
        num_images: SDXL only: 1, 3 or 6 images.
        seed: The first image's seed (the next images take the next seeds); random when empty.
        width: Overrides the job type's width (multiples of 8 for SDXL, 16 for Wan).
        height: Overrides the job type's height.
        steps: Overrides the job type's denoising steps (1-100).
        guidance: Overrides the job type's guidance scale (0-30).
        frames: Wan videos: frames to generate (4k+1, up to 161).
        content_tier: The tier the job asks for: artistic, explicit or unrestricted (the owner's profile
            must allow it).
        user_id: The job's owner (its profile's tier applies); the operator profile when empty.
        webhook_url: Where the job's ending is sent (a signed webhook).
        job_id: A job recorded by the gateway; given, the other parameters but job_type are not used.
    """
    if job_id is None:
        fields = {"negative_prompt": negative_prompt or None, "num_images": num_images, "seed": seed,
                  "width": width, "height": height, "steps": steps, "guidance": guidance, "frames": frames,
                  "content_tier": content_tier}  # fmt: skip
        try:
            job_id = await _create_job(job_type, prompt, fields, user_id, webhook_url)
        except (JobError, PolicyError) as exc:
            return Failed(message=str(Failure.of(exc)))
    elif prompt:
        return Failed(message=str(Failure("INVALID_PARAMETERS", "give either job_id or a prompt, not both")))
    try:
        spec = validate(job_id)
    except NotFound as exc:
        return Failed(message=str(exc))
    except JobNotRunnable as exc:  # e.g. a second run for a finished job: leave the job alone
        return Completed(message=f"nothing to do: {exc}")
    except JobRejected as exc:  # failed and announced by the core
        return Failed(message=str(exc))
    progress = ProgressArtifact(f"{spec.job_type.name} generation")
    shown: list[asyncio.Task[None]] = []  # the run page's summary, made while the job goes on
    try:
        prompt = enhance(spec)
        shown.append(asyncio.create_task(_show(spec, show_summary(_summary(spec, prompt)))))
        result = await generate(spec, prompt, progress)
    except GenerationCancelled:
        conclude(spec, JobStatus.CANCELLED)
        return Cancelled(message="cancelled between generation steps")
    except Exception as exc:
        failure = Failure.of(exc)
        conclude(spec, JobStatus.FAILED, failure)
        return Failed(message=failure.for_operators())
    finally:
        await asyncio.gather(*shown)
    if not conclude(spec, JobStatus.COMPLETED, outputs=outputs_of(result.assets), prompt=prompt):
        # this run came back after recovery gave the job to another run: its files are not the job's
        return Cancelled(message=f"superseded: job {spec.id} now belongs to another run")
    # after the job is complete (its owner waits for nothing here): the run page's full bar and pictures
    await asyncio.gather(_show(spec, progress.show(100)), _show(spec, show_outputs(_files(result))))
    return Completed(message=f"{len(result.assets)} file(s) stored", data=_state_data(spec, result))


async def _create_job(
    job_type: str,
    prompt: str,
    fields: dict[str, Any],
    user_id: uuid.UUID | None,
    webhook_url: str | None,
) -> uuid.UUID:
    """The job of a run an operator started, on this run, after the gateway's checks."""
    run_id = current_run_id()
    deployment = current_deployment()
    try:
        kind = get_job_type(job_type)
    except UnknownJobType as exc:
        raise InvalidJob(str(exc), code="INVALID_JOB_TYPE", details={"valid": exc.valid}) from None
    queue = kind.queue
    if deployment is not None and deployment != queue:
        raise InvalidJob(
            f"{job_type} runs on the {queue} queue: start it from generate/{queue}", code="INVALID_JOB_TYPE"
        )
    metadata = {name: value for name, value in fields.items() if value is not None}
    job_id = create(
        JobRequest(
            user_id=user_id or OPERATOR_USER_ID, job_type=job_type, prompt=prompt, metadata=metadata,
            webhook_url=webhook_url, idempotency_key=None if run_id is None else f"flow-run:{run_id}",
            flow_run_id=run_id,
        )
    )  # fmt: skip
    if run_id is not None:
        try:
            async with FlowRuns() as runs:
                await runs.name_for_job(run_id, job_id, kind.name, queue, user_id or OPERATOR_USER_ID)
        except Exception as exc:  # a name is a convenience: the job runs under the old one
            get_run_logger().warning("run not named after its job %s: %s", job_id, exc)
    return job_id


def _state_data(spec: JobSpec, result: GenerationResult) -> dict[str, Any]:
    return {"job_id": str(spec.id), "assets": [asset.key for asset in result.assets]}


def _summary(spec: JobSpec, prompt: str) -> JobSummary:
    request = spec.request
    settings = f"{request.width}x{request.height}, {request.steps} steps, guidance {request.guidance}"
    if spec.job_type.output == "video":
        settings += f", {request.frames} frames"
    seeds = ", ".join(str(seed) for seed in request.seeds)
    return JobSummary(
        job_id=spec.id, job_type=spec.job_type.name, queue=spec.job_type.queue, owner=spec.user_id,
        credits=spec.job_type.credits_for(len(request.seeds)), tier=spec.content_tier.value,
        prompt=spec.prompt, enhanced_prompt=prompt, negative_prompt=request.negative_prompt or None,
        settings=f"{settings}, seeds {seeds}",
    )  # fmt: skip


def _files(result: GenerationResult) -> list[ShownFile]:
    """The job's files as links an operator's browser opens (a video shows its thumbnail)."""
    settings = get_settings()
    storage = Storage(settings.storage_url)
    thumbnails = {a.index: a for a in result.assets if a.type == "thumbnail"}
    files = []
    for asset in result.assets:
        if asset.type == "thumbnail":
            continue
        url = file_link(settings, storage, asset.bucket, asset.key)
        thumbnail = thumbnails.get(asset.index)
        picture = url if asset.type == "image" else None
        if thumbnail is not None:
            picture = file_link(settings, storage, thumbnail.bucket, thumbnail.key)
        files.append(ShownFile(f"{asset.type} {asset.index + 1} (seed {asset.seed})", url, picture))
    return files


async def _show(spec: JobSpec, shown: Awaitable[None]) -> None:
    """Something for the run page; a convenience that never fails the job."""
    try:
        await shown
    except Exception as exc:
        get_run_logger().warning("run page of job %s not updated: %s", spec.id, exc)
