"""A processing job's progress: on its row, as `ourvidz.job.progress` events, and in the Prefect UI.

The device thread reports every denoising step; the reporter keeps only the latest value and publishes
it at most every `interval` seconds from the flow's event loop, so generation never waits for it.

Before its first step a job may wait for the device (another job's call runs): the executor tells it
its position each time the device moves on, and the reporter publishes phase `waiting_for_device`
with that position, refreshing the job's `progressed_at` at least every WAITING_HEARTBEAT while the
device moves. So recovery measures a job's silence only while it runs on the device, or while the
device itself stands still.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.db.models import Job
from ourvidz.db.types import utcnow
from ourvidz.job_status import JobStatus
from ourvidz.orchestration.artifacts import ProgressArtifact
from ourvidz.orchestration.events import emit_job_event

GENERATION_SHARE = 95  # the last 5 % are storing the files
WAITING, GENERATING = "waiting_for_device", "generating"
WAITING_HEARTBEAT = (
    10.0  # seconds between progressed_at refreshes of a job that waits, while the device moves
)
logger = logging.getLogger(__name__)


def set_progress(sessions: sessionmaker[Session], job_id: uuid.UUID, percent: int) -> None:
    """Record progress of a processing job (0-100); a job in any other status is left alone."""
    with sessions.begin() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.PROCESSING)
            .values(progress=max(0, min(100, percent)), progressed_at=utcnow())
        )


class ProgressReporter:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        job_id: uuid.UUID,
        user_id: uuid.UUID,
        job_type: str,
        interval: float = 0.25,
        heartbeat: float = WAITING_HEARTBEAT,
        artifact: ProgressArtifact | None = None,
    ) -> None:
        self.sessions, self.job_id, self.user_id, self.job_type = sessions, job_id, user_id, job_type
        self.interval, self.heartbeat = interval, heartbeat
        self._latest: int | None = None
        self._phase: str | None = None
        self._position: int | None = None
        self._published: tuple[int | None, str | None, int | None] | None = None
        self._published_at = 0.0
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._artifact = artifact or ProgressArtifact(f"{job_type} generation")

    def report(self, step: int, total: int) -> None:
        """Called from the device thread after each step."""
        percent = int(GENERATION_SHARE * step / total)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._update, percent)

    def waiting(self, position: int) -> None:
        """Called from the device thread while the request waits: `position` requests run before it."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._update_waiting, position)

    async def __aenter__(self) -> ProgressReporter:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._publish_loop())
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        assert self._task is not None
        self._closing.set()
        self._wake.set()
        await self._task

    def _update(self, percent: int) -> None:
        self._latest, self._phase, self._position = percent, GENERATING, None
        self._wake.set()

    def _update_waiting(self, position: int) -> None:
        if self._phase != GENERATING:  # a late word from the queue once generation started is stale
            self._phase, self._position = WAITING, position
            self._wake.set()

    async def _publish_loop(self) -> None:
        while not self._closing.is_set():
            await self._wake.wait()
            self._wake.clear()
            await self._publish()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.interval)
        await self._publish()  # the last value reported

    async def _publish(self) -> None:
        """Publish the latest state; a failure here is logged and never fails the job."""
        state = (self._latest, self._phase, self._position)
        if self._phase is None:
            return
        heartbeat = self._phase == WAITING and time.monotonic() - self._published_at >= self.heartbeat
        if state == self._published and not heartbeat:
            return
        self._published, self._published_at = state, time.monotonic()
        percent = self._latest or 0
        payload: dict[str, Any] = {"progress": percent, "phase": self._phase}
        if self._phase == WAITING:
            payload["position"] = self._position
        try:
            await asyncio.to_thread(set_progress, self.sessions, self.job_id, percent)
            emit_job_event("progress", self.job_id, self.user_id, self.job_type, payload)
        except Exception as exc:
            logger.warning("could not publish progress %d%% of job %s: %s", percent, self.job_id, exc)
        try:  # the Prefect UI's view, apart: an API hiccup there never hides the progress from the owner
            await self._artifact.show(float(percent))
        except Exception as exc:
            logger.warning("could not show progress %d%% of job %s in Prefect: %s", percent, self.job_id, exc)
