"""Long-lived threads that run flow runs, each with one event loop and one pair of Prefect clients.

A flow run started on a fresh thread and loop builds new Prefect API clients (TLS context, connection
pool) for the run and again for its first tasks: about 150 ms before the flow body starts, and tens of
milliseconds per task. These threads enter the client contexts once and keep them, so a run starts
in a few tens of milliseconds. A run goes to the thread that was idle last (its connections are the
warmest), not to the one idle longest.

Runs here send heartbeats (crash recovery counts on them) every `heartbeat_seconds` unless Prefect's
own setting (PREFECT_FLOWS_HEARTBEAT_FREQUENCY) says otherwise: a default of the worker type, so a
worker started by `prefect worker start --type ourvidz-gpu` sends them too.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from prefect.client.schemas.objects import FlowRun
from prefect.context import AsyncClientContext, SyncClientContext
from prefect.flow_engine import run_flow
from prefect.flows import Flow
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, get_current_settings, temporary_settings


@dataclass
class _Run:
    flow: Flow[..., Any]
    flow_run: FlowRun
    future: Future[Any]


class FlowThreads:
    def __init__(self, size: int, heartbeat_seconds: int) -> None:
        self._heartbeat_seconds = heartbeat_seconds
        self._lock = threading.Lock()
        self._backlog: deque[_Run] = deque()  # runs waiting for a thread
        self._idle: list[queue.SimpleQueue[_Run | None]] = []  # inboxes of idle threads, last idle last
        self._closed = False
        self._threads = [
            threading.Thread(target=self._serve_forever, name=f"ourvidz-flow-{i}", daemon=True)
            for i in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, flow: Flow[..., Any], flow_run: FlowRun) -> Future[Any]:
        """Run `flow_run` to its final state on the next free thread; the future gives that state."""
        run = _Run(flow, flow_run, Future())
        with self._lock:
            if not self._idle:
                self._backlog.append(run)
                return run.future
            inbox = self._idle.pop()
        inbox.put(run)
        return run.future

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for inbox in idle:
            inbox.put(None)

    def _next(self, inbox: queue.SimpleQueue[_Run | None]) -> _Run | None:
        with self._lock:
            if self._backlog:
                return self._backlog.popleft()
            if self._closed:
                return None
            self._idle.append(inbox)
        return inbox.get()

    def _serve_forever(self) -> None:
        heartbeat = get_current_settings().flows.heartbeat_frequency or self._heartbeat_seconds
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: heartbeat}):
            asyncio.run(self._serve())

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        inbox: queue.SimpleQueue[_Run | None] = queue.SimpleQueue()
        with SyncClientContext.get_or_create():
            async with AsyncClientContext.get_or_create():
                while (item := await loop.run_in_executor(None, self._next, inbox)) is not None:
                    if not item.future.set_running_or_notify_cancel():
                        continue
                    try:
                        outcome = run_flow(item.flow, flow_run=item.flow_run, return_type="state")
                        state = await outcome if asyncio.iscoroutine(outcome) else outcome
                    except BaseException as exc:  # the engine itself failed; the worker reports a crash
                        item.future.set_exception(exc)
                        if not isinstance(exc, Exception):
                            raise
                    else:
                        item.future.set_result(state)
