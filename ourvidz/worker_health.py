"""Observations of worker health: probes of the registered HTTP workers (the chat worker, and each
Prefect worker's status endpoint, registered as `worker:<pool>:<name>`) and the `worker_health` rows
that keep every observation. A Prefect worker whose status endpoint fails every probe for
STALE_WORKER_SECONDS is dropped from the registry (it died without deregistering).

The GPU workers' side seen from Prefect (online, heartbeat, late runs) is added by the health-check
flow, which is the only caller that talks to Prefect; this module needs the database and HTTP only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.db.models import SystemConfig, WorkerHealth
from ourvidz.registry import forget_worker, probe, record_health, worker_key

# a Prefect worker's status endpoint failing every probe this long is removed from the registry (the
# chat worker's registration is an operator's and stays: callers pass over it while it is unhealthy)
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


def registered_http_workers(sessions: sessionmaker[Session]) -> dict[str, str]:
    """Registered worker key (`chat`, `gpu:<name>`, ...) -> URL, from `system_config`."""
    prefix = worker_key("")
    query = select(SystemConfig.key, SystemConfig.value).where(SystemConfig.key.like(f"{prefix}%"))
    with sessions() as session:
        rows = session.execute(query).all()
    return {key.removeprefix(prefix): str(value["url"]) for key, value in rows if value.get("url")}


def probe_http_workers(sessions: sessionmaker[Session]) -> list[Observation]:
    """Probe every registered HTTP worker, keep each result with its registration (so callers pass
    over an unhealthy chat worker) and return one observation each."""
    observations = []
    for key, url in registered_http_workers(sessions).items():
        result = probe(url)
        failing_for = record_health(sessions, key, url, result)
        kind, _, name = key.partition(":")
        status, error, active = "healthy" if result.healthy else "unhealthy", result.error, None
        if name and result.healthy and isinstance(result.body, dict):  # a worker's status endpoint
            active = sum(result.body.get("running", {}).values())
        if name and failing_for is not None and failing_for >= STALE_WORKER_SECONDS:
            # a worker that died without deregistering (SIGKILL, lost machine); it registers anew at start
            forget_worker(sessions, key, url)
            status, error = "offline", f"registration removed: unreachable for {failing_for:.0f} s ({error})"
        observations.append(Observation(
            worker_type=kind, worker_name=name or None, status=status, url=url,
            response_time_ms=round(result.seconds * 1000, 1), active_jobs=active, error=error,
        ))  # fmt: skip
    return observations


def record_observations(sessions: sessionmaker[Session], observations: list[Observation]) -> None:
    with sessions.begin() as session:
        session.add_all(WorkerHealth(**asdict(o)) for o in observations)
