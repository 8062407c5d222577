"""The flow runs of jobs, through one long-lived Prefect client: create, cancel, read, crash.

The core (`ourvidz.jobs`) sees runs only as `RunView`s and ids, and Prefect's failures only as
`PrefectUnavailable`; the Prefect client and its models stay in here.
"""

from __future__ import annotations

import uuid
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from types import TracebackType

import httpx
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.actions import DeploymentFlowRunCreate
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateName,
)
from prefect.client.schemas.objects import WorkerStatus
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.runtime import deployment, flow_run
from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings
from prefect.states import Cancelling, Crashed, Scheduled, to_state_create

from ourvidz.orchestration.events import emit_run_finished
from ourvidz.orchestration.names import deployment_name, generation_run_name, generation_run_tags

RUNS_PER_READ = 200  # the API answers at most this many runs per call


class RunState(StrEnum):
    SCHEDULED = "scheduled"
    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    CRASHED = "crashed"

    @property
    def is_final(self) -> bool:
        return self in (RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED, RunState.CRASHED)


@dataclass(frozen=True, slots=True)
class RunView:
    """What the core may know of a flow run: its state and since when."""

    id: uuid.UUID
    state: RunState | None
    since: datetime | None = None


@dataclass(frozen=True, slots=True)
class PoolWorker:
    name: str
    online: bool
    last_heartbeat: datetime | None


class PrefectUnavailable(RuntimeError):
    """Prefect could not be reached, or refused the call (e.g. the deployment is missing)."""


PREFECT_ERRORS = (httpx.HTTPError, PrefectHTTPStatusError, ObjectNotFound, OSError)


def failing_fast() -> AbstractContextManager[object]:
    """Prefect calls made in this context (this task and the tasks it starts) fail at once instead of
    retrying with the client's back-off (2, 4, 8, 16, 32 s): for loops that retry on their own."""
    return temporary_settings(updates={PREFECT_CLIENT_MAX_RETRIES: 0})


class FlowRuns:
    """One Prefect client for a process's life (`async with FlowRuns() as runs:`, or `open`/`close`)."""

    def __init__(self) -> None:
        self._client: PrefectClient | None = None
        self._deployments: dict[str, uuid.UUID] = {}

    async def open(self) -> FlowRuns:
        self._client = get_client()
        await self._client.__aenter__()
        return self

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.__aexit__(None, None, None)

    async def __aenter__(self) -> FlowRuns:
        return await self.open()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def client(self) -> PrefectClient:
        assert self._client is not None, "FlowRuns is not open"
        return self._client

    async def create_generation_run(
        self, job_id: uuid.UUID, job_type: str, queue: str, idempotency_key: str, owner: uuid.UUID
    ) -> uuid.UUID:
        """A Scheduled run of the queue's generation deployment for the job, named and tagged for it; the
        same key gives the same run. Only the new run's id is read back: the full FlowRun model costs more
        CPU than the request."""
        body = DeploymentFlowRunCreate(
            name=generation_run_name(job_type, job_id),
            tags=generation_run_tags(job_type, queue, owner),
            parameters={"job_id": str(job_id), "job_type": job_type},
            state=to_state_create(Scheduled()),
            idempotency_key=idempotency_key,
        ).model_dump(mode="json", exclude_unset=True)
        deployment_id = await self._deployment(queue)
        try:
            answer = await self.client.request(
                "POST", "/deployments/{id}/create_flow_run", path_params={"id": deployment_id}, json=body
            )
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code == 404:  # the deployment was deleted or re-created
                self._deployments.pop(queue, None)
            raise PrefectUnavailable(f"creating the run of job {job_id} failed: {exc}") from exc
        except PREFECT_ERRORS as exc:
            raise PrefectUnavailable(f"creating the run of job {job_id} failed: {exc}") from exc
        return uuid.UUID(answer.json()["id"])

    async def _deployment(self, queue: str) -> uuid.UUID:
        if queue not in self._deployments:
            try:
                found = await self.client.read_deployment_by_name(deployment_name(queue))
            except PREFECT_ERRORS as exc:
                raise PrefectUnavailable(f"deployment {deployment_name(queue)} not readable: {exc}") from exc
            self._deployments[queue] = found.id
        return self._deployments[queue]

    async def cancel(self, run_id: uuid.UUID, reason: str) -> bool:
        """Ask a run to stop: True if it was still going (it now cancels; a scheduled one is cancelled at
        once), False if it had already ended."""
        try:
            run = await self.client.read_flow_run(run_id)
            if run.state is not None and run.state.is_final():
                return False
            await self.client.set_flow_run_state(run_id, Cancelling(message=reason))
        except ObjectNotFound:
            return False
        except PREFECT_ERRORS as exc:
            raise PrefectUnavailable(f"cancelling run {run_id} failed: {exc}") from exc
        return True

    async def crash(self, run_id: uuid.UUID, reason: str) -> None:
        """Mark a run Crashed whatever it says (a hung one still heartbeats), freeing its queue slot."""
        try:
            await self.client.set_flow_run_state(run_id, Crashed(message=reason), force=True)
        except PREFECT_ERRORS as exc:
            raise PrefectUnavailable(f"crashing run {run_id} failed: {exc}") from exc
        emit_run_finished(run_id, "", [])  # its heartbeats are over: the crash automation need not act

    async def views(self, run_ids: list[uuid.UUID]) -> dict[uuid.UUID, RunView]:
        """The runs Prefect has of `run_ids` (a missing id is absent from the answer)."""
        found: dict[uuid.UUID, RunView] = {}
        try:
            for start in range(0, len(run_ids), RUNS_PER_READ):
                chunk = FlowRunFilter(id=FlowRunFilterId(any_=run_ids[start : start + RUNS_PER_READ]))
                for run in await self.client.read_flow_runs(flow_run_filter=chunk, limit=RUNS_PER_READ):
                    state = RunState(run.state.type.value.lower()) if run.state is not None else None
                    since = run.state.timestamp if run.state is not None else None
                    found[run.id] = RunView(run.id, state, since)
        except PREFECT_ERRORS as exc:
            raise PrefectUnavailable(f"reading flow runs failed: {exc}") from exc
        return found

    async def workers(self, pool: str) -> list[PoolWorker]:
        """The pool's workers as Prefect sees them."""
        try:
            workers = await self.client.read_workers_for_work_pool(pool)
        except PREFECT_ERRORS as exc:
            raise PrefectUnavailable(f"reading the workers of pool {pool!r} failed: {exc}") from exc
        return [
            PoolWorker(worker.name, worker.status == WorkerStatus.ONLINE, worker.last_heartbeat_time)
            for worker in workers
        ]

    async def late_runs(self, pool: str) -> int:
        """How many of the pool's runs are Late (no worker took them on time)."""
        late = FlowRunFilter(state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Late"])))
        try:
            runs = await self.client.read_flow_runs(flow_run_filter=late, limit=RUNS_PER_READ)
        except PREFECT_ERRORS as exc:
            raise PrefectUnavailable(f"reading late runs failed: {exc}") from exc
        return sum(1 for run in runs if run.work_pool_name == pool)

    async def healthcheck(self) -> None:
        try:
            problem = await self.client.api_healthcheck()
        except PREFECT_ERRORS as exc:
            raise PrefectUnavailable(str(exc)) from exc
        if problem is not None:
            raise PrefectUnavailable(str(problem))

    async def check_deployments(self, queues: list[str]) -> list[str]:
        """The generation deployments of `queues`, each read back; raises if one is missing."""
        names = [deployment_name(queue) for queue in queues]
        for name in names:
            try:
                await self.client.read_deployment_by_name(name)
            except PREFECT_ERRORS as exc:
                raise PrefectUnavailable(f"{name}: {exc}") from exc
        return names

    async def name_for_job(
        self, run_id: uuid.UUID, job_id: uuid.UUID, job_type: str, queue: str, owner: uuid.UUID
    ) -> None:
        """Name and tag a run an operator started (with a prompt) after the job it made, as the
        dispatcher names and tags the runs it creates."""
        run = await self.client.read_flow_run(run_id)
        tags = [*run.tags, *(t for t in generation_run_tags(job_type, queue, owner) if t not in run.tags)]
        await self.client.update_flow_run(run_id, name=generation_run_name(job_type, job_id), tags=tags)


def current_run_id() -> uuid.UUID | None:
    """The flow run this code runs in (None outside a flow run)."""
    run_id = flow_run.get_id()
    return uuid.UUID(run_id) if run_id else None


def current_deployment() -> str | None:
    """The deployment name (e.g. `sdxl`) of the flow run this code runs in, if it came from one."""
    return deployment.get_name()
