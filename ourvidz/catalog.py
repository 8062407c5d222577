"""The job types of the spec: which queue and model serve each, what it produces, and its defaults.

Defaults are the seed system's worker settings (see ARCHITECTURE.md, "Job types"). Expected seconds are
the spec's figures (upper end of a range). Credits are per output image or video.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Queue = Literal["sdxl", "wan"]
Family = Literal["sdxl", "wan"]
Output = Literal["image", "video"]
Quality = Literal["fast", "high"]

VIDEO_FPS = 16
WAN_ALIAS_PREFIX = "wan_"


@dataclass(frozen=True, slots=True)
class JobType:
    """One generation job type and everything the pipeline needs to run it by default."""

    name: str
    queue: Queue
    family: Family
    output: Output
    quality: Quality
    width: int
    height: int
    steps: int
    guidance: float
    frames: int | None
    num_images_allowed: tuple[int, ...]
    expected_seconds: float
    credits: int
    enhanced: bool
    token_budget: int
    max_prompt_chars: int
    model_variant: str

    @property
    def format(self) -> Output:
        """The spec's `format` field of a job: image or video."""
        return self.output

    @property
    def fps(self) -> int | None:
        return VIDEO_FPS if self.output == "video" else None

    @property
    def file_extension(self) -> str:
        return "mp4" if self.output == "video" else "png"

    @property
    def default_bucket(self) -> str:
        """Storage bucket of the outputs; the seed system names buckets after job types."""
        return self.name

    def credits_for(self, num_images: int = 1) -> int:
        return self.credits * num_images


SDXL_VARIANT = "sdxl-1.0"
WAN_VARIANT = "wan2.1-t2v-1.3b"
WAN_ENHANCED_VARIANT = "wan2.1-t2v-1.3b+llm-7b"


def _sdxl(name: str, quality: Quality, steps: int, guidance: float, seconds: float, credits: int) -> JobType:
    return JobType(
        name=name, queue="sdxl", family="sdxl", output="image", quality=quality,
        width=1024, height=1024, steps=steps, guidance=guidance, frames=None,
        num_images_allowed=(1, 3, 6), expected_seconds=seconds, credits=credits, enhanced=False,
        token_budget=75, max_prompt_chars=2000, model_variant=SDXL_VARIANT,
    )  # fmt: skip


def _wan(
    name: str, output: Output, quality: Quality, seconds: float, credits: int, enhanced: bool
) -> JobType:
    high = quality == "high"
    return JobType(
        name=name, queue="wan", family="wan", output=output, quality=quality,
        width=832, height=480, steps=50 if high else 25, guidance=7.5 if high else 6.5,
        frames=81 if output == "video" else 1, num_images_allowed=(1,), expected_seconds=seconds,
        credits=credits, enhanced=enhanced, token_budget=250 if high else 175, max_prompt_chars=4000,
        model_variant=WAN_ENHANCED_VARIANT if enhanced else WAN_VARIANT,
    )  # fmt: skip


JOB_TYPES: dict[str, JobType] = {
    job.name: job
    for job in (
        _sdxl("sdxl_image_fast", "fast", steps=15, guidance=6.0, seconds=8, credits=1),
        _sdxl("sdxl_image_high", "high", steps=25, guidance=7.5, seconds=15, credits=2),
        _wan("image_fast", "image", "fast", seconds=73, credits=1, enhanced=False),
        _wan("image_high", "image", "high", seconds=90, credits=2, enhanced=False),
        _wan("video_fast", "video", "fast", seconds=180, credits=3, enhanced=False),
        _wan("video_high", "video", "high", seconds=280, credits=5, enhanced=False),
        _wan("image7b_fast_enhanced", "image", "fast", seconds=87, credits=2, enhanced=True),
        _wan("image7b_high_enhanced", "image", "high", seconds=104, credits=3, enhanced=True),
        _wan("video7b_fast_enhanced", "video", "fast", seconds=194, credits=4, enhanced=True),
        _wan("video7b_high_enhanced", "video", "high", seconds=294, credits=6, enhanced=True),
    )
}


class UnknownJobType(ValueError):
    """A job type that is neither a spec name nor an accepted alias."""

    def __init__(self, given: object) -> None:
        self.given = given
        self.valid = sorted(JOB_TYPES)
        super().__init__(f"unknown job type {given!r}; valid job types: {', '.join(self.valid)}")


def canonical_name(name: object) -> str:
    """The spec's name for `name`, accepting later spellings (`wan_video_fast`, `Video-Fast`)."""
    if not isinstance(name, str):
        raise UnknownJobType(name)
    key = name.strip().lower().replace("-", "_")
    if key in JOB_TYPES:
        return key
    if key.startswith(WAN_ALIAS_PREFIX):
        bare = key.removeprefix(WAN_ALIAS_PREFIX)
        if bare in JOB_TYPES and JOB_TYPES[bare].family == "wan":
            return bare
    raise UnknownJobType(name)


def get_job_type(name: object) -> JobType:
    """Look up a job type by spec name or alias; raises `UnknownJobType` listing the valid names."""
    return JOB_TYPES[canonical_name(name)]
