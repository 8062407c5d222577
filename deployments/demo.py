"""`ourvidz demo`: the whole path once, on this machine.

Brings the embedded stack up, starts one `sdxl_image_fast` and one `video_fast` generation from their
deployments as an operator would (`run_deployment` with a prompt: each run creates its job, owned by
the operator profile), shows a progress bar per job from the job rows, prints the output files and
the flow run URLs, and stops everything again. Succeeds only if both jobs completed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.catalog import get_job_type
from ourvidz.config import Settings
from ourvidz.db.models import Image, Job, Video
from ourvidz.db.session import sessions_for
from ourvidz.job_status import JobStatus
from ourvidz.orchestration.names import deployment_name
from ourvidz.stack import LocalStack, start_local_stack
from ourvidz.storage import Storage

PROMPT = "a lighthouse on a cliff at dusk, waves crashing below, cinematic light"
CPU_VIDEO_FRAMES = 17  # a tiny Wan model on a CPU decodes 81 frames in minutes; 17 shows the path
TIMEOUT_SECONDS = 1800


@dataclass
class DemoJob:
    flow_run_id: uuid.UUID
    job_type: str
    flow_run_url: str = ""
    job_id: uuid.UUID | None = None  # once its run has created it


def run_demo(settings: Settings, console: Console) -> bool:
    console.print("[bold]Starting the stack[/bold] (Prefect server, job database, GPU worker)...")
    local = start_local_stack(settings)
    try:
        console.print(f"Prefect UI: [link={local.ui_url}]{local.ui_url}[/link]")
        with temporary_settings(updates={PREFECT_API_URL: local.api_url}):
            jobs = asyncio.run(_submit(local, on_gpu=_has_cuda()))
            sessions = sessions_for(settings.database_url)
            finals = _watch(sessions, jobs, console, local)
        _report(sessions, settings, jobs, finals, console)
        return len(finals) == len(jobs) and all(status is JobStatus.COMPLETED for status in finals.values())
    finally:
        console.print("Stopping the stack...")
        local.stack.stop()


async def _submit(local: LocalStack, on_gpu: bool) -> list[DemoJob]:
    video = {} if on_gpu else {"frames": CPU_VIDEO_FRAMES}
    jobs = []
    for job_type, options in (("sdxl_image_fast", {}), ("video_fast", video)):
        name = deployment_name(get_job_type(job_type).queue)
        parameters = {"job_type": job_type, "prompt": PROMPT, **options}
        run = await run_deployment(name, parameters=parameters, timeout=0, as_subflow=False)
        jobs.append(DemoJob(run.id, job_type, f"{local.ui_url}/runs/flow-run/{run.id}"))
    return jobs


def _watch(
    sessions: sessionmaker[Session], jobs: list[DemoJob], console: Console, local: LocalStack
) -> dict[uuid.UUID, JobStatus]:
    """Progress bars from the job rows until each job is final (or its run ended without one)."""
    columns = (TextColumn("{task.description:<16}"), BarColumn(), TextColumn("{task.fields[status]:>10}"))
    finals: dict[uuid.UUID, JobStatus] = {}
    deadline = time.monotonic() + TIMEOUT_SECONDS
    runs = {job.flow_run_id: job for job in jobs}
    with (
        get_client(sync_client=True) as client,
        Progress(*columns, TimeElapsedColumn(), console=console) as progress,
    ):
        bars = {
            job.flow_run_id: progress.add_task(job.job_type, total=100, status="scheduled") for job in jobs
        }
        while len(finals) < len(jobs) and time.monotonic() < deadline:
            local.stack.check_alive()
            with sessions() as session:
                rows = session.scalars(select(Job).where(Job.flow_run_id.in_(bars))).all()
            for row in rows:
                assert row.flow_run_id is not None
                runs[row.flow_run_id].job_id = row.id
                progress.update(bars[row.flow_run_id], completed=row.progress, status=str(row.status))
                if row.status.is_final:
                    finals[row.flow_run_id] = row.status
            for run_id in set(bars) - finals.keys() - {row.flow_run_id for row in rows}:
                run = client.read_flow_run(run_id)  # no job yet: a run that ended made none
                if run.state is not None and run.state.is_final():
                    finals[run_id] = JobStatus.FAILED
                    progress.update(bars[run_id], status=f"run {run.state.name}")
            time.sleep(0.25)
    return finals


def _report(
    sessions: sessionmaker[Session],
    settings: Settings,
    jobs: list[DemoJob],
    finals: dict[uuid.UUID, JobStatus],
    console: Console,
) -> None:
    storage = Storage(settings.storage_url)
    with sessions() as session:
        for job in jobs:
            final = finals.get(job.flow_run_id)
            colour = "green" if final is JobStatus.COMPLETED else "red"
            console.print(f"\n[bold]{job.job_type}[/bold]: [{colour}]{final or 'timed out'}[/]")
            console.print(f"  flow run: {job.flow_run_url}")
            if job.job_id is None:
                console.print("  no job was created: see the flow run")
                continue
            row = session.get_one(Job, job.job_id)
            if row.error_message:
                console.print(f"  error: {row.error_message}")
            images = session.scalars(select(Image).where(Image.job_id == job.job_id)).all()
            videos = session.scalars(select(Video).where(Video.job_id == job.job_id)).all()
            keys = [(a.bucket, a.storage_key) for a in images]
            keys += [(v.bucket, key) for v in videos for key in (v.storage_key, v.thumbnail_key)]
            for bucket, key in keys:
                if bucket and key:
                    console.print(f"  file: {storage.location(bucket, key)}")


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
