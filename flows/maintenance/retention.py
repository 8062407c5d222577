"""Flow-run retention, hourly on the maintenance pool: ended maintenance runs older than
OURVIDZ_MAINTENANCE_RUN_RETENTION_HOURS and ended generation runs older than
OURVIDZ_GENERATION_RUN_RETENTION_DAYS go, with their logs and artifacts (`ourvidz.orchestration.retention`).
"""

from __future__ import annotations

from prefect import flow
from prefect.events import emit_event

from tasks.maintenance import prune

PRUNED = (
    "ourvidz.runs.pruned"  # what each run deleted (events outlive the runs: bench/retention.py sums them)
)


@flow(name="prune-runs", log_prints=True)
async def prune_runs() -> dict[str, int]:
    """Delete old ended flow runs; returns how many runs and artifacts of each kind went."""
    counts = await prune()
    print(", ".join(f"{name}: {count}" for name, count in counts.items()))
    emit_event(PRUNED, resource={"prefect.resource.id": "ourvidz.retention"}, payload=counts)
    return counts
