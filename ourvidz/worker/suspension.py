"""One suspension observer for every flow run in this process, instead of one per run.

For each deployment run, Prefect's flow engine starts a thread with its own event loop, API client (a
fresh TLS context) and event subscription, reads the run, and waits for all that before the run
begins: on a 2-core machine, more CPU than the rest of the run's start together. A worker runs many
runs in one process, so it gives each run's watch to one `FlowRunSuspendingObserver` on its own loop;
a `Suspended` run is still reported to the engine the way Prefect's own observer reports it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import prefect.flow_engine as flow_engine
from prefect._flow_run_suspension import mark_flow_run_suspension_requested
from prefect._internal.observers import FlowRunSuspendingObserver

ENGINE_HOOK = "observe_flow_run_suspension"  # what the engine calls per run (prefect.flow_engine)


@asynccontextmanager
async def shared_suspension_observer(polling_interval: float) -> AsyncIterator[None]:
    """While entered, flow runs started in this process share one observer on the running loop."""
    if not hasattr(flow_engine, ENGINE_HOOK):
        raise RuntimeError(f"prefect.flow_engine has no {ENGINE_HOOK}: this Prefect version is not supported")
    loop = asyncio.get_running_loop()
    async with FlowRunSuspendingObserver(
        on_suspended=mark_flow_run_suspension_requested, polling_interval=polling_interval
    ) as observer:

        @contextmanager
        def observe(flow_run_id: uuid.UUID, *_args: Any, **_kwargs: Any) -> Iterator[None]:
            loop.call_soon_threadsafe(observer.add_in_flight_flow_run_id, flow_run_id)
            try:
                yield
            finally:
                loop.call_soon_threadsafe(observer.remove_in_flight_flow_run_id, flow_run_id)

        original = getattr(flow_engine, ENGINE_HOOK)
        setattr(flow_engine, ENGINE_HOOK, observe)
        try:
            yield
        finally:
            setattr(flow_engine, ENGINE_HOOK, original)
