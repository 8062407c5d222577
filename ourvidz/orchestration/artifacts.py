"""What a job's flow run shows in the Prefect UI besides its state: a progress bar and its outputs."""

from __future__ import annotations

import uuid
from typing import Any

from prefect.artifacts import acreate_progress_artifact, acreate_table_artifact, aupdate_progress_artifact


class ProgressArtifact:
    """The run's progress artifact (`job-<id>`), created on first use and updated in place."""

    def __init__(self, job_id: uuid.UUID, description: str) -> None:
        self.key, self.description = f"job-{job_id}", description
        self._id: uuid.UUID | None = None

    async def show(self, percent: float) -> None:
        if self._id is None:
            self._id = await acreate_progress_artifact(
                progress=percent, key=self.key, description=self.description
            )
        else:
            await aupdate_progress_artifact(self._id, progress=percent)


async def outputs_table(job_id: uuid.UUID, description: str, rows: list[dict[str, Any]]) -> None:
    await acreate_table_artifact(table=rows, key=f"job-{job_id}-outputs", description=description)
