"""Publishing generation progress without slowing generation down.

The device thread reports every step; this reporter keeps only the latest value and publishes it at
most every `interval` seconds from the flow's event loop: the job row's progress, a progress
artifact in the Prefect UI and an `ourvidz.job.progress` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact

from ourvidz.api.events import emit_job_event
from ourvidz.config import get_settings
from ourvidz.db.session import sessions_for
from ourvidz.jobs.finish import set_progress

GENERATION_SHARE = 95  # the last 5 % are storing the files


class ProgressReporter:
    def __init__(self, job_id: uuid.UUID, user_id: uuid.UUID, job_type: str, interval: float = 0.25) -> None:
        self.job_id, self.user_id, self.job_type, self.interval = job_id, user_id, job_type, interval
        self._latest: int | None = None
        self._published = -1
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._artifact: asyncio.Task[uuid.UUID] | None = None

    def report(self, step: int, total: int) -> None:
        """Called from the device thread after each step."""
        percent = int(GENERATION_SHARE * step / total)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._update, percent)

    async def __aenter__(self) -> ProgressReporter:
        self._loop = asyncio.get_running_loop()
        # Created alongside the first steps rather than before them: generation need not wait for it.
        self._artifact = asyncio.create_task(
            acreate_progress_artifact(
                progress=0.0, key=f"job-{self.job_id}", description=f"{self.job_type} generation"
            )
        )
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
            await asyncio.to_thread(
                set_progress, sessions_for(get_settings().database_url), self.job_id, percent
            )
            if self._artifact is not None:
                await aupdate_progress_artifact(await self._artifact, progress=float(percent))
            emit_job_event("progress", self.job_id, self.user_id, self.job_type, {"progress": percent})
        except Exception as exc:
            get_run_logger().warning("could not publish progress %d%%: %s", percent, exc)
