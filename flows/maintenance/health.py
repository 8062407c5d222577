"""Worker health every minute: Prefect's view of the GPU pool (online workers, late runs), a probe of
each registered status endpoint and of the chat worker. Each observation becomes a `worker_health`
row and a WorkerHealthUpdate event (admins see them live); the table is the run's artifact.

A chat worker found unhealthy is passed over by enhancement and chat until a probe finds it healthy
again (or for at most `ourvidz.registry.UNHEALTHY_SKIP_SECONDS`).
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import acreate_table_artifact

from tasks.maintenance import check_workers

ARTIFACT_KEY = "worker-health"


@flow(name="check-worker-health", log_prints=True)
async def check_worker_health() -> list[dict[str, Any]]:
    observations = await check_workers()
    if observations:
        await acreate_table_artifact(key=ARTIFACT_KEY, table=observations, description="Worker health")
    unhealthy = [o for o in observations if o["status"] != "healthy"]
    print(f"{len(observations)} worker observation(s), {len(unhealthy)} not healthy")
    return observations
