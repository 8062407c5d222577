"""The GPU worker: a Prefect worker type that runs flow runs inside its own process.

Prefect's process worker starts a Python process per flow run (seconds of start-up, and every job
would reload its models). This worker loads each flow once by entrypoint and runs flow runs in
threads of this process, next to the warm generation runtime. It wakes on the `Scheduled` events of
its pool instead of waiting for the next poll (the timer poll stays as the fallback), and it turns a
`Cancelling` flow run into a cancel flag that generation checks between steps.

It holds up to `OURVIDZ_SDXL_SLOTS` / `OURVIDZ_WAN_SLOTS` runs of each queue at once (`slots.py`), so
compatible SDXL jobs meet in the device executor and batch. On the way from `Scheduled` to the GPU a
run costs only Prefect's claim (the scheduled-runs query, `Pending`) and the engine's own calls: the
run's labels, infrastructure id and name are written beside the run, not before it.

Use it as `ourvidz worker --pool gpu --queue sdxl --queue wan` or `prefect worker start --type
ourvidz-gpu --pool gpu` (registered through the `prefect.collections` entry point).
"""

from __future__ import annotations

import asyncio
import datetime
import os
import socket
import uuid
from functools import partial
from typing import Any

import anyio
import anyio.abc
from prefect._internal.observers import FlowRunCancellingObserver
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.responses import WorkerFlowRunResponse
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventAnyResourceFilter, EventFilter, EventNameFilter, EventOccurredFilter
from prefect.flows import Flow, load_flow_from_entrypoint
from prefect.settings import get_current_settings
from prefect.workers.base import BaseJobConfiguration, BaseVariables, BaseWorker, BaseWorkerResult

from ourvidz.config import get_settings
from ourvidz.db.session import sessions_for
from ourvidz.orchestration.events import emit_run_finished
from ourvidz.orchestration.names import generation_run_name
from ourvidz.registry import leases
from ourvidz.registry import workers as registry
from ourvidz.worker.cancellation import cancel_flag, forget
from ourvidz.worker.flow_threads import FlowThreads
from ourvidz.worker.health import HealthServer
from ourvidz.worker.runtime import current_runtime, get_runtime
from ourvidz.worker.slots import QueueSlots
from ourvidz.worker.stats import WorkerStats
from ourvidz.worker.suspension import shared_suspension_observer

WORKER_TYPE = "ourvidz-gpu"
RECONNECT_SECONDS = 2.0
GENERATION_QUEUES = ("sdxl", "wan")  # what a worker serves when started without queues
FINISHED_DELAY_SECONDS = 2.0


class OurvidzJobConfiguration(BaseJobConfiguration):
    """Flow runs share this process: there is no per-run infrastructure to configure."""


class OurvidzVariables(BaseVariables):
    pass


class OurvidzWorkerResult(BaseWorkerResult):
    pass


class OurvidzWorker(BaseWorker[OurvidzJobConfiguration, OurvidzVariables, OurvidzWorkerResult]):
    type = WORKER_TYPE
    job_configuration = OurvidzJobConfiguration
    job_configuration_variables = OurvidzVariables
    _description = (
        "Runs OurVidz generation flow runs in-process, with models kept warm on this machine's GPU."
    )
    _display_name = "OurVidz GPU"

    def __init__(
        self,
        work_pool_name: str,
        *args: Any,
        name: str | None = None,
        warm_up: bool = True,
        health_port: int | None = None,
        **kwargs: Any,
    ) -> None:
        # `<host>-<pool>` unless named: the UI says which machine a worker is (Prefect's default is random)
        name = name or f"{socket.gethostname()}-{work_pool_name}"
        super().__init__(work_pool_name, *args, name=name, **kwargs)
        self.warm_up = warm_up
        self.stats = WorkerStats()
        self._health_port = health_port if health_port is not None else get_settings().worker_health_port
        self._health: HealthServer | None = None
        self._flows: dict[str, Flow[..., Any]] = {}
        self._entrypoints: dict[uuid.UUID, str] = {}
        self._flow_lock = asyncio.Lock()
        self._wake = anyio.Event()
        self._lease_id = uuid.uuid4()  # new at every start: a restarted worker never renews a dead one's
        self._lease_due = anyio.Event()
        self._run_observer: FlowRunCancellingObserver | None = None
        self._background: anyio.abc.TaskGroup | None = None
        settings = get_settings()
        queues = self._work_queues or set(GENERATION_QUEUES)
        self.slots = QueueSlots({queue: settings.worker_slots(queue) for queue in sorted(queues)})
        self._flow_threads = FlowThreads(
            min(self._limit or self.slots.total, self.slots.total), settings.flow_heartbeat_seconds
        )

    async def setup(self) -> None:
        await super().setup()
        self._run_observer = await self._exit_stack.enter_async_context(
            FlowRunCancellingObserver(
                on_cancelling=self._on_cancelling,
                polling_interval=get_current_settings().worker.cancellation_poll_seconds,
            )
        )
        await self._exit_stack.enter_async_context(
            shared_suspension_observer(get_current_settings().worker.cancellation_poll_seconds)
        )
        # Loops of our own, cancelled at teardown (the runs task group would wait for them forever).
        self._background = await self._exit_stack.enter_async_context(anyio.create_task_group())
        self._background.start_soon(self._listen_for_scheduled_runs)
        self._background.start_soon(self._submit_on_wake)
        self._background.start_soon(self._keep_lease)
        if self.warm_up:
            self._background.start_soon(self._warm_up)
        if self._health_port is not None:
            host = get_settings().worker_health_host
            self._health = HealthServer(self._health_port, self.status, host)
            self._health.start()
            await anyio.to_thread.run_sync(self._register, f"http://{host}:{self._health.port}")

    async def teardown(self, *exc_info: Any) -> None:
        if self._background is not None:
            self._background.cancel_scope.cancel()
        try:
            with anyio.CancelScope(shield=True):  # a stop that is being cancelled itself still cleans up
                await anyio.to_thread.run_sync(self._give_up_lease)
                if self._health is not None:
                    self._health.stop()
                    await anyio.to_thread.run_sync(self._deregister)
        finally:
            self._flow_threads.shutdown()  # not daemon threads: left running, the process never exits
            await super().teardown(*exc_info)

    async def run(
        self,
        flow_run: FlowRun,
        configuration: OurvidzJobConfiguration,
        task_status: anyio.abc.TaskStatus[str] | None = None,
    ) -> OurvidzWorkerResult:
        flow = await self._flow_for(flow_run)
        identifier = self._identifier(flow_run)
        if task_status is not None:
            task_status.started(identifier)
        return await self._execute(flow, flow_run, identifier)

    async def _submit_scheduled_flow_runs(
        self, flow_run_response: list[WorkerFlowRunResponse]
    ) -> list[FlowRun]:
        """Take only the runs that fit this worker's free slots; the rest stay for other workers."""
        fitting = [
            entry
            for entry in flow_run_response
            if self.slots.take(entry.flow_run.id, entry.flow_run.work_queue_name or "default")
        ]
        if fitting:
            self._lease_due.set()  # the lease names a run as soon as this worker holds it
        submitted = await super()._submit_scheduled_flow_runs(fitting)
        taken = {run.id for run in submitted}
        for entry in fitting:
            if entry.flow_run.id not in taken:
                self.slots.release(entry.flow_run.id)
        return submitted

    async def _submit_run(self, flow_run: FlowRun) -> None:
        """Claim the run (`Pending`) and start it on a flow thread at once.

        Prefect's own submission first reads the deployment and the flow, renders a job configuration
        from the pool's template, labels the run and proposes `Submitting`: five more round trips
        (~250 ms on a 2-core machine) that a run in this process does not need before it starts. The
        `submitted-flow-run` worker events are not emitted, for the same reason."""
        try:
            if await self._propose_pending_state(flow_run):
                assert self._runs_task_group is not None
                await self._runs_task_group.start(self._run_claimed, flow_run)
            else:
                self._release(flow_run.id)
        finally:
            self._submitting_flow_run_ids.discard(flow_run.id)
            if self._cancelling_observer is not None:
                self._cancelling_observer.remove_in_flight_flow_run_id(flow_run.id)

    async def _run_claimed(
        self, flow_run: FlowRun, *, task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        identifier = self._identifier(flow_run)
        try:
            flow = await self._flow_for(flow_run)
        except Exception as exc:
            task_status.started(identifier)
            self._release(flow_run.id)
            await self._propose_crashed_state(flow_run, f"its flow could not be loaded: {exc}")
            return
        task_status.started(identifier)
        assert self._background is not None
        self._background.start_soon(self._describe, flow_run, identifier)
        try:
            result = await self._execute(flow, flow_run, identifier)
        finally:
            self._release(flow_run.id)
            self._finished(flow_run)
        if result.status_code != 0:
            await self._propose_crashed_state(flow_run, "the flow engine failed in the GPU worker")

    async def _describe(self, flow_run: FlowRun, identifier: str) -> None:
        """What Prefect's submission writes before a run starts, written while it runs: the worker's
        labels, the infrastructure id (for cancelling) and the run's `<job_type>-<job_id>` name."""
        labels = {"prefect.worker.name": self.name, "prefect.worker.type": self.type}
        if self._work_pool is not None:
            labels |= {"prefect.work-pool.name": self._work_pool.name,
                       "prefect.work-pool.id": str(self._work_pool.id)}  # fmt: skip
        parameters = flow_run.parameters or {}
        name = None
        if parameters.get("job_id") and parameters.get("job_type"):
            name = generation_run_name(str(parameters["job_type"]), str(parameters["job_id"]))
        try:
            await self.client.update_flow_run_labels(flow_run.id, labels)
            await self.client.update_flow_run(
                flow_run.id, infrastructure_pid=identifier,
                **({"name": name} if name and name != flow_run.name else {}),
            )  # fmt: skip
        except Exception as exc:  # a convenience for the UI: the run goes on without it
            self._logger.warning("flow run %s not labelled: %s", flow_run.id, exc)

    def _finished(self, flow_run: FlowRun) -> None:
        try:
            self._background.start_soon(self._announce_finished, flow_run)  # type: ignore[union-attr]
        except (AttributeError, RuntimeError):  # the worker is stopping: its loops are gone, say it now
            emit_run_finished(flow_run.id, flow_run.name, list(flow_run.tags or []))

    async def _announce_finished(self, flow_run: FlowRun) -> None:
        """Say the run ended once its heartbeat thread is surely gone (it stops within a second of the
        engine returning, perhaps after one last beat)."""
        await anyio.sleep(FINISHED_DELAY_SECONDS)
        emit_run_finished(flow_run.id, flow_run.name, list(flow_run.tags or []))

    def _release(self, flow_run_id: uuid.UUID) -> None:
        self._release_limit_slot(flow_run_id)
        self.slots.release(flow_run_id)

    @staticmethod
    def _identifier(flow_run: FlowRun) -> str:
        return f"{socket.gethostname()}:{os.getpid()}:{flow_run.id}"

    async def _execute(self, flow: Flow[..., Any], flow_run: FlowRun, identifier: str) -> OurvidzWorkerResult:
        queue = flow_run.work_queue_name or "default"
        cancel_flag(flow_run.id)
        if self._run_observer is not None:
            self._run_observer.add_in_flight_flow_run_id(flow_run.id)
        self.stats.started(queue)
        try:
            await asyncio.wrap_future(self._flow_threads.submit(flow, flow_run))
            status_code = 0
        except Exception:
            self._logger.exception("flow run %s ended with an engine error", flow_run.id)
            status_code = 1
        finally:
            self._wake.set()  # a freed queue slot may let a waiting run through: look now
            self.stats.finished(queue)
            if self._run_observer is not None:
                self._run_observer.remove_in_flight_flow_run_id(flow_run.id)
            forget(flow_run.id)
        return OurvidzWorkerResult(identifier=identifier, status_code=status_code)

    async def kill_infrastructure(
        self, infrastructure_pid: str, configuration: OurvidzJobConfiguration, grace_seconds: int = 30
    ) -> None:
        """A run handed to this process but not started yet: raise its flag so it stops at once."""
        self._on_cancelling(uuid.UUID(infrastructure_pid.rsplit(":", 1)[-1]))

    async def _keep_lease(self) -> None:
        """Renew this process's lease every third of its length, and whenever it takes runs: a worker
        that dies stops renewing, and the dispatchers recover its runs once the lease has expired."""
        seconds = get_settings().worker_lease_seconds
        sessions = sessions_for(get_settings().database_url)
        while True:
            try:
                await anyio.to_thread.run_sync(
                    partial(leases.renew, sessions, self._lease_id, worker=self.name,
                            pool=self._work_pool_name, runs=self.slots.runs(), seconds=seconds)
                )  # fmt: skip
            except Exception as exc:  # the job database is away: renew when it is back
                self._logger.warning("lease not renewed: %s", exc)
            with anyio.move_on_after(seconds / 3):
                await self._lease_due.wait()
            self._lease_due = anyio.Event()

    def _give_up_lease(self) -> None:
        """A worker stopping with no run gives its lease up; one stopping with runs leaves it to expire,
        so that the dispatchers recover them."""
        if self.slots.runs():
            return
        try:
            leases.give_up(sessions_for(get_settings().database_url), self._lease_id)
        except Exception as exc:  # it expires by itself; its runs ended with this worker
            self._logger.warning("lease not given up: %s", exc)

    def _register(self, url: str) -> None:
        """Register the status endpoint (named `<pool>:<worker name>`), so the health-check flow probes it."""
        try:
            registry.register(
                sessions_for(get_settings().database_url), registry.STATUS_ENDPOINT, url, "worker-start",
                name=self._registry_name, pool=self._work_pool_name, queues=sorted(self._work_queues),
            )  # fmt: skip
        except Exception as exc:  # the job database may not be reachable yet: the worker runs anyway
            self._logger.warning("status endpoint not registered for health checks: %s", exc)

    def _deregister(self) -> None:
        """A worker that stops cleanly takes its status endpoint off the health check's list."""
        try:
            registry.forget(
                sessions_for(get_settings().database_url), registry.STATUS_ENDPOINT, self._registry_name
            )
        except Exception as exc:
            self._logger.warning("status endpoint not deregistered: %s", exc)

    @property
    def _registry_name(self) -> str:
        return f"{self._work_pool_name}:{self.name}"

    def status(self) -> dict[str, Any]:
        """What `GET /health` reports: identity, queues, running and peak runs, warm models."""
        runtime = current_runtime()
        loads = {} if runtime is None else {k.family: n for k, n in runtime.pipelines.loads.items()}
        return {
            "name": self.name,
            "type": self.type,
            "work_pool": self._work_pool_name,
            "work_queues": sorted(self._work_queues),
            "limit": self._limit,
            "slots": self.slots.slots,
            "slots_held": self.slots.held(),
            "pid": os.getpid(),
            "device": None if runtime is None else str(runtime.pipelines.device),
            "model_loads": loads,
            "batches": {} if runtime is None else runtime.executor.batch_counts(),
            **self.stats.snapshot(),
        }

    def _on_cancelling(self, flow_run_id: uuid.UUID) -> None:
        self._logger.info("flow run %s is cancelling; generation stops at the next step", flow_run_id)
        cancel_flag(flow_run_id).set()

    async def _flow_for(self, flow_run: FlowRun) -> Flow[..., Any]:
        """The flow of a run's deployment, imported once per entrypoint and kept."""
        if flow_run.deployment_id is None:
            raise ValueError(f"flow run {flow_run.id} has no deployment to take its flow from")
        entrypoint = self._entrypoints.get(flow_run.deployment_id)
        if entrypoint is None:
            deployment = await self.client.read_deployment(flow_run.deployment_id)
            if not deployment.entrypoint:
                raise ValueError(f"deployment {deployment.name} has no entrypoint")
            entrypoint = self._entrypoints[flow_run.deployment_id] = deployment.entrypoint
        async with self._flow_lock:
            if entrypoint not in self._flows:
                self._flows[entrypoint] = await anyio.to_thread.run_sync(
                    load_flow_from_entrypoint, entrypoint
                )
        return self._flows[entrypoint]

    async def _listen_for_scheduled_runs(self) -> None:
        """Wake the submit loop on every `Scheduled` event of this pool (~10 ms after run creation)."""
        while True:
            pool = self._work_pool
            if pool is None:
                await anyio.sleep(0.2)
                continue
            now = datetime.datetime.now(datetime.UTC)
            event_filter = EventFilter(
                event=EventNameFilter(name=["prefect.flow-run.Scheduled"]),
                any_resource=EventAnyResourceFilter(id=[f"prefect.work-pool.{pool.id}"]),
                occurred=EventOccurredFilter(since=now, until=now + datetime.timedelta(days=3650)),
            )
            try:
                async with get_events_subscriber(filter=event_filter) as subscriber:
                    self._wake.set()  # catch up on anything scheduled while not subscribed
                    async for _event in subscriber:
                        self._wake.set()
            except Exception as exc:
                self._logger.warning("event subscription lost (%s); polling until it is back", exc)
            await anyio.sleep(RECONNECT_SECONDS)

    async def _submit_on_wake(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            try:
                await self.get_and_submit_flow_runs()
            except Exception as exc:
                self._logger.warning("submitting woken flow runs failed: %s", exc)

    async def _warm_up(self) -> None:
        """Load the models of this worker's queues before the first job asks for them."""
        families = sorted(self._work_queues & {"sdxl", "wan"}) or ["sdxl", "wan"]
        try:
            # get_runtime() imports torch and diffusers: off the event loop, which is claiming runs meanwhile
            await anyio.to_thread.run_sync(lambda: get_runtime().warm_up(families), abandon_on_cancel=True)
        except Exception:
            self._logger.exception("warm-up failed; models will load with the first job")
