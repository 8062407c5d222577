"""What one generation call is asked to make, checked before any model work.

A request is built from a catalog job type (its defaults) plus the overrides a job may carry, each
within bounds. Construction validates, so an invalid request cannot exist.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ourvidz.catalog import VIDEO_FPS, JobType, UnknownJobType, get_job_type

SEED_LIMIT = 2**63  # seeds are stored in signed 64-bit columns
MAX_IMAGES_PER_REQUEST = 6
STEPS_RANGE = (1, 100)
GUIDANCE_RANGE = (0.0, 30.0)
MAX_FRAMES = 161
MAX_PROMPT_CHARS = 10_000


@dataclass(frozen=True, slots=True)
class FamilyLimits:
    size_multiple: int
    min_side: int
    max_side: int


# SDXL: the VAE works in 8-pixel cells. Wan: 8-pixel VAE cells times the transformer's 2x2 patches.
FAMILY_LIMITS = {
    "sdxl": FamilyLimits(size_multiple=8, min_side=64, max_side=2048),
    "wan": FamilyLimits(size_multiple=16, min_side=64, max_side=1280),
}


class InvalidRequest(ValueError):
    """A request the pipelines cannot run as asked; raised before any model work."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One job's pipeline inputs. `seeds` holds one seed per output image (one for a video).

    A `reference` is an image's RGB pixels at the output size, set by the worker before the call. SDXL
    (image-to-image): `strength` is the share of the schedule that is denoised, and the prompt may be
    empty (the seed's exact copies). Wan (image-to-video): the reference is the first frame, and
    `last_reference` the last one.
    """

    family: str
    prompt: str
    width: int
    height: int
    steps: int
    guidance: float
    seeds: tuple[int, ...]
    frames: int = 1
    negative_prompt: str = ""
    fps: int = field(default=VIDEO_FPS)
    strength: float | None = None
    reference: np.ndarray | None = field(default=None, compare=False, repr=False)
    last_reference: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        limits = FAMILY_LIMITS.get(self.family)
        if limits is None:
            raise InvalidRequest("family", f"unknown model family {self.family!r}; known: sdxl, wan")
        if not isinstance(self.prompt, str) or (not self.prompt.strip() and self.strength is None):
            raise InvalidRequest("prompt", "must be a non-empty string")
        if self.strength is not None:
            if self.family != "sdxl":
                raise InvalidRequest("denoise_strength", "only SDXL jobs take a denoise strength")
            if not isinstance(self.strength, int | float) or not 0 < self.strength <= 1:
                raise InvalidRequest("denoise_strength", f"must be in (0, 1], got {self.strength!r}")
        if len(self.prompt) > MAX_PROMPT_CHARS or len(self.negative_prompt) > MAX_PROMPT_CHARS:
            raise InvalidRequest("prompt", f"longer than {MAX_PROMPT_CHARS} characters")
        for name in ("width", "height"):
            value = getattr(self, name)
            if not _is_int(value) or not limits.min_side <= value <= limits.max_side:
                raise InvalidRequest(name, f"must be {limits.min_side}..{limits.max_side}, got {value!r}")
            if value % limits.size_multiple:
                raise InvalidRequest(name, f"must be a multiple of {limits.size_multiple}, got {value}")
        if not _is_int(self.steps) or not STEPS_RANGE[0] <= self.steps <= STEPS_RANGE[1]:
            raise InvalidRequest("steps", f"must be {STEPS_RANGE[0]}..{STEPS_RANGE[1]}, got {self.steps!r}")
        if not isinstance(self.guidance, int | float) or not math.isfinite(self.guidance):
            raise InvalidRequest("guidance", f"must be a number, got {self.guidance!r}")
        if not GUIDANCE_RANGE[0] <= self.guidance <= GUIDANCE_RANGE[1]:
            raise InvalidRequest("guidance", f"must be {GUIDANCE_RANGE[0]}..{GUIDANCE_RANGE[1]}")
        if not _is_int(self.frames) or not 1 <= self.frames <= MAX_FRAMES:
            raise InvalidRequest("frames", f"must be 1..{MAX_FRAMES}, got {self.frames!r}")
        if self.family == "sdxl" and self.frames != 1:
            raise InvalidRequest("frames", "SDXL makes images: frames must be 1")
        if (self.frames - 1) % 4:
            raise InvalidRequest("frames", f"must be 4k+1 (1, 5, ..., 81), got {self.frames}")
        if not _is_int(self.fps) or not 1 <= self.fps <= 60:
            raise InvalidRequest("fps", f"must be 1..60, got {self.fps!r}")
        max_images = MAX_IMAGES_PER_REQUEST if self.family == "sdxl" else 1
        if not 1 <= len(self.seeds) <= max_images:
            raise InvalidRequest(
                "seeds", f"need 1..{max_images} seeds (one per image), got {len(self.seeds)}"
            )
        if any(not _is_int(seed) or not 0 <= seed < SEED_LIMIT for seed in self.seeds):
            raise InvalidRequest("seeds", f"each seed must be an integer in [0, 2**63), got {self.seeds}")

    @property
    def pipeline(self) -> str:
        """The pipeline that runs it: its family's, or a Wan image-to-video one for reference frames."""
        if self.family != "wan" or self.reference is None:
            return self.family
        return "wan_i2v" if self.last_reference is None else "wan_flf2v"

    @property
    def num_images(self) -> int:
        return len(self.seeds)

    @property
    def is_video(self) -> bool:
        return self.frames > 1

    @property
    def batch_key(self) -> tuple[object, ...] | None:
        """Requests with equal keys can share one pipeline call; None means never batched."""
        if self.family != "sdxl" or self.strength is not None:
            return None
        return (self.family, self.width, self.height, self.steps, self.guidance)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def new_seed() -> int:
    return secrets.randbelow(SEED_LIMIT)


def request_for_job(
    job_type: str | JobType,
    prompt: str,
    *,
    negative_prompt: str = "",
    num_images: int = 1,
    seeds: Sequence[int] | None = None,
    width: int | None = None,
    height: int | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    frames: int | None = None,
    strength: float | None = None,
) -> GenerationRequest:
    """A request with the catalog's defaults for `job_type`, overridden (within bounds) where given."""
    try:
        job = job_type if isinstance(job_type, JobType) else get_job_type(job_type)
    except UnknownJobType as exc:
        raise InvalidRequest("job_type", str(exc)) from exc
    if num_images not in job.num_images_allowed:
        allowed = ", ".join(map(str, job.num_images_allowed))
        raise InvalidRequest("num_images", f"{job.name} makes {allowed} image(s), got {num_images!r}")
    if seeds is None:
        seeds = [new_seed() for _ in range(num_images)]
    elif len(seeds) != num_images:
        raise InvalidRequest("seeds", f"need one seed per image ({num_images}), got {len(seeds)}")
    if job.output == "image" and frames not in (None, 1):
        raise InvalidRequest("frames", f"{job.name} makes images: frames must be 1")
    return GenerationRequest(
        family=job.family,
        prompt=prompt,
        negative_prompt=negative_prompt,
        width=job.width if width is None else width,
        height=job.height if height is None else height,
        steps=job.steps if steps is None else steps,
        guidance=job.guidance if guidance is None else guidance,
        frames=(job.frames or 1) if frames is None else frames,
        seeds=tuple(seeds),
        fps=job.fps or VIDEO_FPS,
        strength=strength,
    )
