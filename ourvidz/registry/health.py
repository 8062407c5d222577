"""Worker health observations: a probe of every registered worker, each kept as a `worker_health` row.

A Prefect worker whose status endpoint fails every probe for STALE_WORKER_SECONDS is dropped from the
registry (it died without deregistering; it registers anew when it starts). The GPU pool's side seen
from Prefect (online workers, late runs) is added by the health-check flow.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from ourvidz.db.models import WorkerHealth
from ourvidz.egress import EgressPolicy
from ourvidz.orchestration.events import emit_worker_health
from ourvidz.orchestration.runs import FlowRuns
from ourvidz.registry.probes import probe
from ourvidz.registry.workers import STATUS_ENDPOINT, forget, record_probe, registrations

# the chat worker's registration is an operator's and stays: callers pass over it while it is unhealthy
STALE_WORKER_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class Observation:
    """One worker's health now: what a `worker_health` row and a WorkerHealthUpdate event carry."""

    worker_type: str
    worker_name: str | None
    status: str  # healthy | unhealthy | offline
    url: str | None = None
    response_time_ms: float | None = None
    active_jobs: int | None = None
    error: str | None = None

    def as_event(self) -> dict[str, Any]:
        """The spec's WorkerHealthUpdate fields."""
        return {
            "workerType": self.worker_type, "workerName": self.worker_name, "status": self.status,
            "responseTime": self.response_time_ms, "activeJobs": self.active_jobs, "error": self.error,
        }  # fmt: skip


async def observe_workers(
    sessions: sessionmaker[Session], runs: FlowRuns, pool: str, egress: EgressPolicy
) -> list[Observation]:
    """Every worker now: the GPU pool's workers and late runs from Prefect, then a probe of each
    registered worker; each observation is kept as a row and sent as a WorkerHealthUpdate event."""
    observations = await pool_observations(runs, pool)
    observations += await asyncio.to_thread(probe_registered, sessions, egress)
    await asyncio.to_thread(record_observations, sessions, observations)
    for observation in observations:
        name = observation.worker_name or observation.worker_type
        emit_worker_health(observation.worker_type, name, observation.as_event())
    return observations


async def pool_observations(runs: FlowRuns, pool: str) -> list[Observation]:
    """Each worker of the GPU pool as Prefect sees it, and the pool's late runs (runs no worker took)."""
    kind = f"prefect:{pool}"[:16]  # the worker as Prefect sees it; its status endpoint's rows say `<pool>`
    observations = []
    for worker in await runs.workers(pool):
        beat = worker.last_heartbeat.isoformat() if worker.last_heartbeat else "never"
        observations.append(Observation(
            worker_type=kind, worker_name=worker.name, status="healthy" if worker.online else "offline",
            error=None if worker.online else f"offline since its heartbeat at {beat}",
        ))  # fmt: skip
    if late := await runs.late_runs(pool):
        observations.append(Observation(
            worker_type=kind, worker_name=None, status="unhealthy",
            error=f"{late} late flow run(s): no worker took them on time",
        ))  # fmt: skip
    return observations


def probe_registered(sessions: sessionmaker[Session], egress: EgressPolicy) -> list[Observation]:
    """Probe every registered worker (through `egress`, the worker URL policy, unless it is a Prefect
    worker's own status endpoint), keep each result with its registration and return one observation
    each. A Prefect worker's status endpoint is observed as its pool (`worker_type`) and name."""
    observations = []
    for worker in registrations(sessions):
        result = probe(worker.url, None if worker.kind == STATUS_ENDPOINT else egress)
        failing_for = record_probe(sessions, worker.kind, worker.name, worker.url, result)
        status, error, active = "healthy" if result.healthy else "unhealthy", result.error, None
        kind, name = worker.kind, worker.name or None
        if worker.kind == STATUS_ENDPOINT:
            kind, _, name = worker.name.partition(":")
            if result.healthy and isinstance(result.body, dict):
                active = sum(result.body.get("running", {}).values())
            if failing_for is not None and failing_for >= STALE_WORKER_SECONDS:
                forget(sessions, worker.kind, worker.name, worker.url)
                status, error = (
                    "offline",
                    f"registration removed: unreachable for {failing_for:.0f} s ({error})",
                )
        observations.append(Observation(
            worker_type=kind, worker_name=name, status=status, url=worker.url,
            response_time_ms=round(result.seconds * 1000, 1), active_jobs=active, error=error,
        ))  # fmt: skip
    return observations


def record_observations(sessions: sessionmaker[Session], observations: list[Observation]) -> None:
    with sessions.begin() as session:
        session.add_all(WorkerHealth(**asdict(o)) for o in observations)
