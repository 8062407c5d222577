"""Whether the GPU pool has an online worker, refreshed in the background so no request waits for it."""

from __future__ import annotations

import asyncio
import contextlib
import time

from ourvidz.orchestration.runs import FlowRuns, PrefectUnavailable

REFRESH_SECONDS = 5.0


class PoolWatch:
    def __init__(self, runs: FlowRuns, pool: str, interval: float = REFRESH_SECONDS) -> None:
        self.runs, self.pool, self.interval = runs, pool, interval
        self.online: bool | None = None  # None: unknown (Prefect or the pool is not there)
        self._checked = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    @property
    def age(self) -> float:
        """Seconds since the pool was last asked."""
        return time.monotonic() - self._checked

    async def refresh(self) -> bool | None:
        try:
            self.online = any(worker.online for worker in await self.runs.workers(self.pool))
        except PrefectUnavailable:
            self.online = None
        self._checked = time.monotonic()
        return self.online

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.interval)
