"""A processing job's progress: on its row, as `ourvidz.job.progress` events, and in the Prefect UI.

The device thread reports every denoising step; the reporter keeps only the latest value and publishes
it at most every `interval` seconds from the flow's event loop, so generation never waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
    ) -> None:
        self.sessions, self.job_id, self.user_id, self.job_type = sessions, job_id, user_id, job_type
        self.interval = interval
        self._latest: int | None = None
        self._published = -1
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._artifact = ProgressArtifact(job_id, f"{job_type} generation")

    def report(self, step: int, total: int) -> None:
        """Called from the device thread after each step."""
        percent = int(GENERATION_SHARE * step / total)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._update, percent)

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
        self._latest = percent
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
        """Publish the latest value; a failure here is logged and never fails the job."""
        percent = self._latest
        if percent is None or percent == self._published:
            return
        self._published = percent
        try:
            await asyncio.to_thread(set_progress, self.sessions, self.job_id, percent)
            await self._artifact.show(float(percent))
            emit_job_event("progress", self.job_id, self.user_id, self.job_type, {"progress": percent})
        except Exception as exc:
            logger.warning("could not publish progress %d%% of job %s: %s", percent, self.job_id, exc)
