"""Crash recovery: jobs whose flow run was lost (its worker died, its run crashed, or its worker hung:
no progress for OURVIDZ_STALL_MINUTES) are re-queued for another run, up to their `max_attempts`, then
failed with `WORKER_LOST`; jobs whose run was cancelled in Prefect are cancelled.

Runs every minute on the maintenance pool, and at once when a generation run crashes or is cancelled
(the automation that `ourvidz bootstrap` creates).
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import acreate_table_artifact

from tasks.maintenance import recover

ARTIFACT_KEY = "job-recovery"


@flow(name="recover-jobs", log_prints=True)
async def recover_jobs() -> list[dict[str, Any]]:
    actions = await recover()
    if actions:
        await acreate_table_artifact(key=ARTIFACT_KEY, table=actions, description="Jobs recovered")
    print(f"{len(actions)} job(s) recovered")
    return actions
