"""One flow run per generation job: validate -> enhance -> generate -> store -> callback.

The job row is the source of truth and always ends final: completed, failed (with the error) or
cancelled. The flow run ends in the matching Prefect state, so the UI and the database agree.
Generation is never retried here (a failed generation fails the job); network-facing steps retry.
"""

from __future__ import annotations

import uuid
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_table_artifact
from prefect.states import Cancelled, Completed, Failed, State

from ourvidz.api.events import emit_job_event
from ourvidz.generation.control import Cancelled as GenerationCancelled
from ourvidz.generation.results import GenerationResult
from ourvidz.job_status import JobStatus
from ourvidz.jobs.finish import Superseded
from ourvidz.jobs.spec import JobSpec
from ourvidz.jobs.start import JobNotFound, JobNotRunnable, JobRejected
from ourvidz.policy import PolicyError
from tasks.stages import enhance, finish, generate, store, validate, webhook


@flow(name="generate", flow_run_name="{job_type}-{job_id}", retries=0, persist_result=False)
async def generate_job(job_id: uuid.UUID, job_type: str = "") -> State[Any]:
    """Generate the files of job `job_id` (`job_type` is only for display)."""
    try:
        spec = validate(job_id)
    except JobNotFound as exc:
        return Failed(message=str(exc))
    except JobNotRunnable as exc:  # e.g. a second run for a finished job: leave the job alone
        return Completed(message=f"nothing to do: {exc}")
    except JobRejected as exc:
        error = f"{exc.code}: {exc}"
        callback(job_id, exc.user_id, job_type, JobStatus.FAILED, error, None, exc.webhook_url)
        return Failed(message=error)
    emit_job_event("processing", spec.id, spec.user_id, spec.job_type.name, {"status": "processing"})
    try:
        prompt = enhance(spec)
        result = await generate(spec, prompt)
        store(spec, result, prompt)
    except Superseded as exc:  # this run came back after recovery gave the job to another run
        return Cancelled(message=f"superseded: {exc}")
    except GenerationCancelled:
        end(spec, JobStatus.CANCELLED)
        return Cancelled(message="cancelled between generation steps")
    except Exception as exc:
        error = f"{exc.code if isinstance(exc, PolicyError) else type(exc).__name__}: {exc}"
        end(spec, JobStatus.FAILED, error)
        return Failed(message=error)
    await _outputs_artifact(spec, result)  # first, so a completed job's table is already in the UI
    end(spec, JobStatus.COMPLETED, result=result)
    return Completed(message=f"{len(result.assets)} file(s) stored", data=_summary(spec, result))


def end(
    spec: JobSpec, status: JobStatus, error: str | None = None, result: GenerationResult | None = None
) -> None:
    """Finish the job, then tell the world; only the run that still owns the job does either (one that
    comes back after recovery gave the job to another run, or after it was already final, does not)."""
    if finish(spec.id, status, error, spec.flow_run_id):
        callback(spec.id, spec.user_id, spec.job_type.name, status, error, result, spec.webhook_url)


def callback(
    job_id: uuid.UUID,
    user_id: uuid.UUID | None,
    job_type: str,
    status: JobStatus,
    error: str | None,
    result: GenerationResult | None,
    webhook_url: str | None,
) -> None:
    """Tell the world: a Prefect event always, the job's webhook when it has one.

    The webhook gets one attempt here (and ~2 s of quick retries): a receiver that is down must not
    hold this GPU queue's flow run; the deliver-webhooks flow makes the later attempts.
    """
    payload: dict[str, Any] = {"job_id": str(job_id), "status": str(status), "job_type": job_type}
    if error is not None:
        payload["error"] = error
    if result is not None:
        payload["assets"] = [{"type": a.type, "bucket": a.bucket, "key": a.key} for a in result.assets]
    emit_job_event(str(status), job_id, user_id, job_type, payload)
    if webhook_url:
        try:
            webhook(webhook_url, job_id, f"job.{status}", payload)
        except Exception as exc:  # every attempt is recorded; the job's own state stands
            get_run_logger().warning(
                "webhook for job %s not delivered yet (%s); left pending for the deliver-webhooks flow",
                job_id, exc,
            )  # fmt: skip


def _summary(spec: JobSpec, result: GenerationResult) -> dict[str, Any]:
    return {"job_id": str(spec.id), "assets": [asset.key for asset in result.assets]}


async def _outputs_artifact(spec: JobSpec, result: GenerationResult) -> None:
    """A table of the outputs in the Prefect UI; a convenience that never fails the job."""
    rows = [
        {"type": a.type, "bucket": a.bucket, "key": a.key, "size": f"{a.width}x{a.height}", "seed": a.seed,
         "frames": a.frames, "bytes": a.size_bytes}
        for a in result.assets
    ]  # fmt: skip
    try:
        await acreate_table_artifact(
            table=rows, key=f"job-{spec.id}-outputs", description=f"{spec.job_type.name}"
        )
    except Exception as exc:
        get_run_logger().warning("outputs artifact of job %s not created: %s", spec.id, exc)
