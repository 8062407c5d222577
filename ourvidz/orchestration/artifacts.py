"""What a job's flow run page shows in the Prefect UI besides its state: what was asked (a summary), a
progress bar, and the outputs as pictures and links.

None of them has a key: keyed artifacts fill the UI's global Artifacts list, and a job's belong on its
run. Every call here is a convenience for operators and never fails a job (callers log and go on).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass

from prefect.artifacts import (
    acreate_image_artifact,
    acreate_link_artifact,
    acreate_markdown_artifact,
    acreate_progress_artifact,
    aupdate_progress_artifact,
)


class ProgressArtifact:
    """The run's progress bar, created on first use and updated in place."""

    def __init__(self, description: str) -> None:
        self.description = description
        self._id: uuid.UUID | None = None

    async def show(self, percent: float) -> None:
        if self._id is None:
            self._id = await acreate_progress_artifact(progress=percent, description=self.description)
        else:
            await aupdate_progress_artifact(self._id, progress=percent)


@dataclass(frozen=True, slots=True)
class JobSummary:
    """What an operator wants on a job's run page: what was asked, by whom, at what cost."""

    job_id: uuid.UUID
    job_type: str
    queue: str
    owner: uuid.UUID
    credits: int
    tier: str
    prompt: str
    enhanced_prompt: str | None
    negative_prompt: str | None
    settings: str  # e.g. "1024x1024, 15 steps, guidance 6.0, seeds 7, 8, 9"

    def markdown(self) -> str:
        lines = [
            f"**{self.job_type}** on `{self.queue}` · owner `{self.owner}` · {self.credits} credit(s) · "
            f"tier {self.tier}",
            "",
            f"Job `{self.job_id}`: {self.settings}",
            "",
            "**Prompt**",
            _fenced(self.prompt),
        ]
        if self.enhanced_prompt is not None and self.enhanced_prompt != self.prompt:
            lines += ["**Enhanced prompt** (what the model was given)", _fenced(self.enhanced_prompt)]
        if self.negative_prompt:
            lines += ["**Negative prompt**", _fenced(self.negative_prompt)]
        return "\n".join(lines)


def _fenced(text: str) -> str:
    """`text` verbatim in a code block whose fence no backtick run inside can close."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


async def show_summary(summary: JobSummary) -> None:
    await acreate_markdown_artifact(markdown=summary.markdown(), description=f"{summary.job_type} job")


@dataclass(frozen=True, slots=True)
class ShownFile:
    """One stored output: a link to it, and the picture to show for it (an image itself, a video's
    thumbnail), if any."""

    name: str  # e.g. "image 2 (seed 8)"
    url: str
    picture_url: str | None


async def show_outputs(files: list[ShownFile]) -> None:
    await asyncio.gather(
        *(
            acreate_image_artifact(image_url=f.picture_url, description=f.name)
            for f in files
            if f.picture_url
        ),
        *(acreate_link_artifact(link=f.url, link_text=f.name, description=f.name) for f in files),
    )
