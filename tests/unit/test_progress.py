"""A job's progress as its flow publishes it: steps, and the wait for the device before them (phase
`waiting_for_device` with its position), which keeps the job from looking silent to recovery."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

from prefect.events.clients import AssertingEventsClient
from prefect.events.worker import EventsWorker
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.db.models import Job
from ourvidz.db.types import utcnow
from ourvidz.jobs.create import JobRequest, create_job
from ourvidz.jobs.progress import GENERATING, WAITING, ProgressReporter
from ourvidz.jobs.recovery import RunFate, fate_of, watched_jobs
from ourvidz.jobs.start import start_job
from ourvidz.orchestration.runs import RunState, RunView

STALL = timedelta(minutes=10)


def _progress_events(job_id: uuid.UUID) -> list[dict[str, Any]]:
    EventsWorker.instance().drain()
    events = [event for client in AssertingEventsClient.all for event in getattr(client, "events", [])]
    return [
        e.payload
        for e in events
        if e.resource.id == f"ourvidz.job.{job_id}" and e.event == "ourvidz.job.progress"
    ]


def _progressed_at(sessions: sessionmaker[Session], job_id: uuid.UUID) -> Any:
    with sessions() as session:
        return session.get_one(Job, job_id).progressed_at


def test_a_job_waiting_for_the_device_says_so_and_is_not_taken_for_hung(
    sessions: sessionmaker[Session], user: uuid.UUID
) -> None:
    job = create_job(sessions, JobRequest(user_id=user, job_type="sdxl_image_fast", prompt="a quay")).job
    run = uuid.uuid4()
    start_job(sessions, job.id, run)
    long_ago = utcnow() - timedelta(minutes=30)  # it has waited that long behind a video
    with sessions.begin() as session:
        session.get_one(Job, job.id).progressed_at = long_ago

    async def until(condition: Any) -> None:
        for _ in range(400):
            if condition():
                return
            await asyncio.sleep(0.025)
        raise AssertionError("the reporter did not publish")

    async def scenario() -> None:
        reporter = ProgressReporter(sessions, job.id, user, "sdxl_image_fast", interval=0.01, heartbeat=0.0)
        async with reporter:
            reporter.waiting(2)  # the test reads no row meanwhile: its sessions share one connection
            await until(lambda: len(_progress_events(job.id)) >= 1)  # published after its row
            reporter.waiting(1)
            await until(lambda: len(_progress_events(job.id)) >= 2)
            reporter.report(5, 10)
            await until(lambda: len(_progress_events(job.id)) >= 3)
            reporter.waiting(0)  # a stale word from the queue once generating: ignored

    asyncio.run(scenario())
    assert _progressed_at(sessions, job.id) > long_ago
    events = _progress_events(job.id)
    assert [(e["phase"], e.get("position")) for e in events] == [
        (WAITING, 2),
        (WAITING, 1),
        (GENERATING, None),
    ]
    assert events[-1]["progress"] == 47
    (watched,) = [w for w in watched_jobs(sessions) if w.job_id == job.id]
    view = RunView(run, RunState.RUNNING, utcnow())
    assert fate_of(watched, view, utcnow() + STALL - timedelta(minutes=1), STALL)[0] is RunFate.ALIVE
