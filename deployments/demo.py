"""`ourvidz demo`: the whole path once, on this machine.

Brings the embedded stack up, submits one `sdxl_image_fast` and one `video_fast` job through their
deployments, shows a progress bar per job from the job rows, prints the output files and the flow
run URLs, and stops everything again. Succeeds only if both jobs completed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

from prefect.settings import PREFECT_API_URL, temporary_settings
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.api.dispatch import dispatch_job
from ourvidz.config import Settings
from ourvidz.db.models import Image, Job, Video
from ourvidz.db.session import sessions_for
from ourvidz.job_status import JobStatus
from ourvidz.jobs.create import create_job, ensure_profile
from ourvidz.stack import LocalStack, start_local_stack
from ourvidz.storage import Storage

DEMO_USER = uuid.uuid5(uuid.NAMESPACE_URL, "https://ourvidz.local/demo-user")
PROMPT = "a lighthouse on a cliff at dusk, waves crashing below, cinematic light"
CPU_VIDEO_FRAMES = 17  # a tiny Wan model on a CPU decodes 81 frames in minutes; 17 shows the path
TIMEOUT_SECONDS = 1800


@dataclass
class DemoJob:
    job_id: uuid.UUID
    job_type: str
    flow_run_url: str = ""


def run_demo(settings: Settings, console: Console) -> bool:
    console.print("[bold]Starting the stack[/bold] (Prefect server, job database, GPU worker)...")
    local = start_local_stack(settings)
    try:
        console.print(f"Prefect UI: [link={local.ui_url}]{local.ui_url}[/link]")
        with temporary_settings(updates={PREFECT_API_URL: local.api_url}):
            jobs = asyncio.run(_submit(settings, local, on_gpu=_has_cuda()))
        sessions = sessions_for(settings.database_url)
        finals = _watch(sessions, jobs, console, local)
        _report(sessions, settings, jobs, finals, console)
        return all(status is JobStatus.COMPLETED for status in finals.values())
    finally:
        console.print("Stopping the stack...")
        local.stack.stop()


async def _submit(settings: Settings, local: LocalStack, on_gpu: bool) -> list[DemoJob]:
    sessions = sessions_for(settings.database_url)
    ensure_profile(sessions, DEMO_USER)
    video = {} if on_gpu else {"frames": CPU_VIDEO_FRAMES}
    jobs = []
    for job_type, metadata in (("sdxl_image_fast", {}), ("video_fast", video)):
        job = create_job(sessions, user_id=DEMO_USER, job_type=job_type, prompt=PROMPT, metadata=metadata).job
        flow_run = await dispatch_job(sessions, job.id, job_type)
        jobs.append(DemoJob(job.id, job_type, f"{local.ui_url}/runs/flow-run/{flow_run.id}"))
    return jobs


def _watch(
    sessions: sessionmaker[Session], jobs: list[DemoJob], console: Console, local: LocalStack
) -> dict[uuid.UUID, JobStatus]:
    columns = (TextColumn("{task.description:<16}"), BarColumn(), TextColumn("{task.fields[status]:>10}"))
    finals: dict[uuid.UUID, JobStatus] = {}
    deadline = time.monotonic() + TIMEOUT_SECONDS
    with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
        bars = {job.job_id: progress.add_task(job.job_type, total=100, status="queued") for job in jobs}
        while len(finals) < len(jobs) and time.monotonic() < deadline:
            local.stack.check_alive()
            with sessions() as session:
                rows = session.scalars(select(Job).where(Job.id.in_(bars))).all()
            for row in rows:
                progress.update(bars[row.id], completed=row.progress, status=str(row.status))
                if row.status.is_final:
                    finals[row.id] = row.status
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
            row = session.get_one(Job, job.job_id)
            colour = "green" if row.status is JobStatus.COMPLETED else "red"
            console.print(
                f"\n[bold]{job.job_type}[/bold]: [{colour}]{finals.get(job.job_id, 'timed out')}[/]"
            )
            console.print(f"  flow run: {job.flow_run_url}")
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
