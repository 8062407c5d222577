"""Create or update the work pool, queues and deployments from code; running it again changes nothing.

Each object is compared with what the server has and written only when it differs, so `ourvidz
bootstrap` is safe to re-run at any time (after a settings change it updates just that object).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate, WorkPoolCreate
from prefect.deployments.runner import EntrypointType
from prefect.exceptions import ObjectNotFound
from prefect.flows import Flow, load_flow_from_entrypoint
from prefect.schedules import Cron
from prefect.utilities.callables import parameter_schema

from deployments.automations import automations, ensure_automation, remove_retired
from deployments.definitions import (
    DEFAULT_JOB_TYPES,
    GENERATION_TAGS,
    MAINTENANCE_CONCURRENCY,
    MAINTENANCE_QUEUE,
    MAINTENANCE_TAGS,
    RECOVERY_DEPLOYMENT,
    RETIRED_DEPLOYMENT,
    MaintenanceFlow,
    QueueSpec,
    generation_description,
    generation_queues,
    maintenance_flows,
)
from flows.generation.job import generate_job
from ourvidz.config import Settings
from ourvidz.db.session import sessions_for
from ourvidz.jobs.create import OPERATOR_USER_ID, ensure_operator
from ourvidz.orchestration.names import concurrency_limit_name, deployment_name
from ourvidz.worker.worker import WORKER_TYPE, OurvidzWorker


class BootstrapError(RuntimeError):
    """The server holds an object that bootstrap must not silently replace."""


@dataclass
class BootstrapReport:
    """What bootstrap did to each object: `created`, `updated` or `unchanged`."""

    actions: dict[str, str] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return any(action != "unchanged" for action in self.actions.values())


async def bootstrap(settings: Settings, pools_only: bool = False) -> BootstrapReport:
    """Everything, or (`pools_only`) just the work pools and queues: what `prefect deploy --all` needs
    before it (prefect.yaml cannot create pools)."""
    report = BootstrapReport()
    async with get_client() as client:
        report.actions[f"work pool {settings.work_pool}"] = await _ensure_pool(client, settings.work_pool)
        for queue in generation_queues(settings):
            report.actions[f"work queue {queue.name}"] = await _ensure_queue(
                client, settings.work_pool, queue
            )
        pool = settings.maintenance_pool
        report.actions[f"work pool {pool}"] = await _ensure_pool(client, pool)
        if pools_only:
            return report
        created = await asyncio.to_thread(ensure_operator, sessions_for(settings.database_url))
        report.actions[f"operator profile {OPERATOR_USER_ID}"] = "created" if created else "unchanged"
        for queue in generation_queues(settings):
            action = await _ensure_deployment(client, settings.work_pool, queue)
            report.actions[f"deployment {deployment_name(queue.name)}"] = await _name_limit(
                client, generate_job.name, queue.name, action
            )
        for spec in maintenance_flows(settings):
            flow = load_flow_from_entrypoint(spec.entrypoint, use_placeholder_flow=False)
            action = await _ensure_maintenance(client, pool, flow, spec)
            report.actions[f"deployment {flow.name}/{spec.name}"] = await _name_limit(
                client, flow.name, spec.name, action
            )
            if await _remove_deployment(client, f"{flow.name}/{RETIRED_DEPLOYMENT}"):
                report.actions[f"deployment {flow.name}/{RETIRED_DEPLOYMENT}"] = "deleted"
        recover = await client.read_deployment_by_name(RECOVERY_DEPLOYMENT)
        for automation in automations(settings.flow_heartbeat_seconds, recover.id):
            report.actions[f"automation {automation.name}"] = await ensure_automation(client, automation)
        for name, action in (await remove_retired(client)).items():
            report.actions[f"automation {name}"] = action
    return report


async def _ensure_pool(client: PrefectClient, name: str) -> str:
    try:
        pool = await client.read_work_pool(name)
    except ObjectNotFound:
        template = OurvidzWorker.get_default_base_job_template()
        await client.create_work_pool(WorkPoolCreate(name=name, type=WORKER_TYPE, base_job_template=template))
        return "created"
    if pool.type != WORKER_TYPE:
        raise BootstrapError(
            f"work pool {name!r} exists with type {pool.type!r}; GPU workers need type {WORKER_TYPE!r}. "
            "Delete it or set OURVIDZ_WORK_POOL to another name."
        )
    return "unchanged"


async def _ensure_queue(client: PrefectClient, pool: str, queue: QueueSpec) -> str:
    try:
        existing = await client.read_work_queue_by_name(queue.name, work_pool_name=pool)
    except ObjectNotFound:
        await client.create_work_queue(
            name=queue.name, work_pool_name=pool, concurrency_limit=queue.concurrency_limit
        )
        return "created"
    if existing.concurrency_limit == queue.concurrency_limit:
        return "unchanged"
    await client.update_work_queue(existing.id, concurrency_limit=queue.concurrency_limit)
    return "updated"


async def _ensure_maintenance(
    client: PrefectClient, pool: str, flow: Flow[..., Any], spec: MaintenanceFlow
) -> str:
    desired = await flow.ato_deployment(
        name=spec.name,
        work_pool_name=pool,
        work_queue_name=MAINTENANCE_QUEUE,
        entrypoint_type=EntrypointType.MODULE_PATH,
        description=spec.description,
        tags=list(MAINTENANCE_TAGS),
        interval=spec.interval_seconds,
        schedule=Cron(spec.cron, timezone="UTC") if spec.cron else None,
        concurrency_limit=MAINTENANCE_CONCURRENCY,  # two overlapping runs would do the same work twice
    )
    try:
        existing = await client.read_deployment_by_name(f"{flow.name}/{spec.name}")
    except ObjectNotFound:
        await desired.apply()
        return "created"
    differs = _differences(
        {
            "entrypoint": (existing.entrypoint, desired.entrypoint),
            "work pool": (existing.work_pool_name, pool),
            "description": (existing.description, desired.description),
            "tags": (sorted(existing.tags), sorted(desired.tags)),
            "schedule": ([_schedule(s.schedule) for s in existing.schedules if s.active], _wanted(spec)),
            "concurrency": (
                getattr(existing.global_concurrency_limit, "limit", None),
                MAINTENANCE_CONCURRENCY,
            ),
            "parameters": (
                existing.parameter_openapi_schema,
                parameter_schema(flow).model_dump(exclude_unset=True),
            ),
        }
    )
    if not differs:
        return "unchanged"
    await desired.apply()
    return f"updated ({differs})"


def _schedule(schedule: Any) -> str:
    if (interval := getattr(schedule, "interval", None)) is not None:
        return f"every {interval.total_seconds():g} s"
    return f"cron {getattr(schedule, 'cron', None)} {getattr(schedule, 'timezone', None) or 'UTC'}"


def _wanted(spec: MaintenanceFlow) -> list[str]:
    if spec.interval_seconds is not None:
        return [f"every {spec.interval_seconds:g} s"]
    return [f"cron {spec.cron} UTC"] if spec.cron else []


async def _name_limit(client: PrefectClient, flow: str, name: str, action: str) -> str:
    """Give the deployment's concurrency limit a name that says whose it is (Prefect finds it by id,
    so the name is only for people)."""
    deployment = await client.read_deployment_by_name(f"{flow}/{name}")
    limit, wanted = deployment.global_concurrency_limit, concurrency_limit_name(flow, name)
    if limit is None or limit.name == wanted:
        return action
    await client.update_global_concurrency_limit(limit.name, GlobalConcurrencyLimitUpdate(name=wanted))
    return "updated (concurrency limit name)" if action == "unchanged" else action


async def _remove_deployment(client: PrefectClient, name: str) -> bool:
    """Delete a deployment an earlier release made under another name (its runs stay)."""
    try:
        retired = await client.read_deployment_by_name(name)
    except ObjectNotFound:
        return False
    await client.delete_deployment(retired.id)
    return True


def _differences(pairs: dict[str, tuple[Any, Any]]) -> str:
    """The names of the (existing, desired) pairs that differ, for the report line."""
    return ", ".join(name for name, (existing, desired) in pairs.items() if existing != desired)


async def _ensure_deployment(client: PrefectClient, pool: str, queue: QueueSpec) -> str:
    desired = await generate_job.ato_deployment(
        name=queue.name,
        work_pool_name=pool,
        work_queue_name=queue.name,
        entrypoint_type=EntrypointType.MODULE_PATH,
        description=generation_description(queue.name),
        tags=list(GENERATION_TAGS),
        parameters={"job_type": DEFAULT_JOB_TYPES[queue.name]},
        # The work queue's limit again, enforced where it cannot race: the server takes a slot when a
        # run goes Pending, so two workers polling at once cannot both start the queue's last run.
        concurrency_limit=queue.concurrency_limit,
    )
    try:
        existing = await client.read_deployment_by_name(deployment_name(queue.name))
    except ObjectNotFound:
        await desired.apply()
        return "created"
    differs = _differences(
        {
            "entrypoint": (existing.entrypoint, desired.entrypoint),
            "work pool": (existing.work_pool_name, pool),
            "work queue": (existing.work_queue_name, queue.name),
            "description": (existing.description, desired.description),
            "tags": (sorted(existing.tags), sorted(desired.tags)),
            "concurrency": (
                getattr(existing.global_concurrency_limit, "limit", None),
                queue.concurrency_limit,
            ),
            "parameters": (
                existing.parameter_openapi_schema,
                parameter_schema(generate_job).model_dump(exclude_unset=True),
            ),
            "defaults": (existing.parameters, desired.parameters),
        }
    )
    if not differs:
        return "unchanged"
    await desired.apply()
    return f"updated ({differs})"
