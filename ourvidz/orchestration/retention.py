"""Flow-run retention: ended runs of one kind (a tag) older than a cutoff are deleted with their
artifacts, a batch at a time, through Prefect's own bulk delete (which takes their task runs, states
and logs along). Without it a stack makes ~6,000 maintenance runs a day and keeps them all.

Only runs in a final state whose `end_time` is before the cutoff go; a job's row never depends on its
run once the job is final, and a final job is all that such a run can belong to.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from datetime import datetime

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterEndTime,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import StateType
from prefect.exceptions import ObjectNotFound

BATCH = 200  # runs read per round
DELETE_BATCH = 50  # the most Prefect's bulk delete takes per call
FINAL = [StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED]


@dataclass
class Pruned:
    runs: int = 0
    artifacts: int = 0


async def prune_runs(client: PrefectClient, tag: str, ended_before: datetime, rounds: int = 50) -> Pruned:
    """Delete the ended runs tagged `tag` that ended before `ended_before` (at most `rounds` batches,
    so a first run on a large backlog ends; the next scheduled run goes on)."""
    pruned = Pruned()
    old = FlowRunFilter(
        tags=FlowRunFilterTags(all_=[tag]),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=FINAL)),
        end_time=FlowRunFilterEndTime(before_=ended_before),
    )
    for _ in range(rounds):
        ids = [run.id for run in await client.read_flow_runs(flow_run_filter=old, limit=BATCH)]
        if not ids:
            break
        pruned.artifacts += await _delete_artifacts(client, ids)
        for start in range(0, len(ids), DELETE_BATCH):
            chunk = FlowRunFilter(id=FlowRunFilterId(any_=ids[start : start + DELETE_BATCH]))
            answer = await client.request(
                "POST",
                "/flow_runs/bulk_delete",  # type: ignore[arg-type]
                json={"flow_runs": chunk.model_dump(mode="json", exclude_unset=True), "limit": DELETE_BATCH},
            )
            pruned.runs += len(answer.json()["deleted"])
    return pruned


async def _delete_artifacts(client: PrefectClient, run_ids: list[uuid.UUID]) -> int:
    """Prefect's bulk delete leaves a run's artifacts behind: they go first."""
    of_runs = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=run_ids))
    deleted = 0
    while artifacts := await client.read_artifacts(artifact_filter=of_runs, limit=BATCH):
        for artifact in artifacts:
            with contextlib.suppress(ObjectNotFound):  # gone meanwhile
                await client.delete_artifact(artifact.id)
        deleted += len(artifacts)
    return deleted
