"""A started job as the generation flow sees it: an immutable snapshot taken when it starts.

A job's generation options live in its metadata (`num_images`, `seed` or `seeds`, `negative_prompt`,
`width`, `height`, `steps`, `guidance`, `frames`, `bucket`, `content_tier`, `enhance`); anything not
given comes from the catalog.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from ourvidz.catalog import JobType, get_job_type
from ourvidz.generation.request import GenerationRequest, InvalidRequest, request_for_job
from ourvidz.policy import ContentTier
from ourvidz.storage import validate_bucket

OVERRIDE_KEYS = ("width", "height", "steps", "guidance", "frames")


@dataclass(frozen=True, slots=True)
class JobSpec:
    id: uuid.UUID
    user_id: uuid.UUID
    job_type: JobType
    prompt: str
    request: GenerationRequest
    bucket: str
    content_tier: ContentTier
    enhance: bool
    webhook_url: str | None = None
    project_id: uuid.UUID | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    flow_run_id: uuid.UUID | None = None  # the run that started this attempt

    def with_prompt(self, prompt: str) -> GenerationRequest:
        """The generation request with `prompt` (e.g. the enhanced one) in place of the original."""
        return request_for_job(
            self.job_type, prompt, negative_prompt=self.request.negative_prompt,
            num_images=self.request.num_images, seeds=self.request.seeds, width=self.request.width,
            height=self.request.height, steps=self.request.steps, guidance=self.request.guidance,
            frames=self.request.frames,
        )  # fmt: skip


def requested_tier(metadata: dict[str, Any]) -> ContentTier:
    try:
        return ContentTier(metadata.get("content_tier", ContentTier.ARTISTIC))
    except ValueError as exc:
        raise InvalidRequest("content_tier", f"must be one of {[t.value for t in ContentTier]}") from exc


def build_request(job_type: str, prompt: str, metadata: dict[str, Any]) -> GenerationRequest:
    """The generation request a job's metadata asks for, checked against the catalog and bounds."""
    seeds = metadata.get("seeds")
    if seeds is None and metadata.get("seed") is not None:
        seeds = [metadata["seed"]]
    if seeds is not None and not isinstance(seeds, list):
        raise InvalidRequest("seeds", "must be a list of integers")
    negative = metadata.get("negative_prompt") or ""
    if not isinstance(negative, str):
        raise InvalidRequest("negative_prompt", "must be a string")
    overrides = {key: metadata[key] for key in OVERRIDE_KEYS if metadata.get(key) is not None}
    return request_for_job(
        get_job_type(job_type), prompt, negative_prompt=negative, num_images=metadata.get("num_images", 1),
        seeds=seeds, **overrides,
    )  # fmt: skip


def job_bucket(job_type: JobType, metadata: dict[str, Any]) -> str:
    bucket = metadata.get("bucket") or job_type.default_bucket
    try:
        return validate_bucket(bucket)
    except ValueError as exc:
        raise InvalidRequest("bucket", str(exc)) from exc
