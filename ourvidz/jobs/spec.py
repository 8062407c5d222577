"""A started job as the generation flow sees it: an immutable snapshot taken when it starts.

A job's generation options live in its metadata (`num_images`, `seed` or `seeds`, `negative_prompt`,
`width`, `height`, `steps`, `guidance`, `frames`, `bucket`, `content_tier`, `enhance`, and
`enhanced_prompt`: the prompt to generate from, enhanced by the client); anything not given comes from
the catalog. A reference image (`reference_image_url`, with `denoise_strength` or `reference_strength`
and `exact_copy_mode`) makes an SDXL job image-to-image (`ourvidz.jobs.references`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from ourvidz.catalog import JobType, UnknownJobType, get_job_type
from ourvidz.generation.request import GenerationRequest, InvalidRequest, request_for_job
from ourvidz.jobs.errors import InvalidJob
from ourvidz.jobs.references import NO_RULES, Img2Img, ReferenceRules, img2img_of
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
    img2img: Img2Img | None = None  # an image-to-image job's reference images and mode

    def with_prompt(self, prompt: str) -> GenerationRequest:
        """The generation request with `prompt` (e.g. the enhanced one) in place of the original."""
        return request_for_job(
            self.job_type, prompt, negative_prompt=self.request.negative_prompt,
            num_images=self.request.num_images, seeds=self.request.seeds, width=self.request.width,
            height=self.request.height, steps=self.request.steps, guidance=self.request.guidance,
            frames=self.request.frames, strength=self.request.strength,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Checked:
    """A job's type, prompt and options once they passed every check that needs no database."""

    job_type: JobType
    prompt: str
    metadata: dict[str, Any]
    request: GenerationRequest
    bucket: str
    tier: ContentTier  # the tier the job asks for (`metadata.content_tier`)
    img2img: Img2Img | None = None


def check_job(
    job_type: str, prompt: str | None, metadata: dict[str, Any] | None, *,
    rules: ReferenceRules = NO_RULES,
) -> Checked:  # fmt: skip
    """The same checks wherever a job is made or started; raises InvalidJob with the spec's code.
    `rules`: the Wan image-to-video models this process runs (Wan jobs' reference frames)."""
    prompt = prompt.strip() if isinstance(prompt, str) else ""
    metadata = dict(metadata or {})
    if not prompt and not metadata.get("reference_image_url"):  # a reference job may go without one
        raise InvalidJob("a prompt is required", code="MISSING_PROMPT")
    try:
        kind = get_job_type(job_type)
    except UnknownJobType as exc:
        raise InvalidJob(str(exc), code="INVALID_JOB_TYPE", details={"valid": exc.valid}) from None
    if len(prompt) > kind.max_prompt_chars:
        raise InvalidJob(f"prompt is longer than {kind.max_prompt_chars} characters", code="PROMPT_TOO_LONG")
    enhanced = metadata.get("enhanced_prompt")
    if enhanced is not None and (not isinstance(enhanced, str) or len(enhanced) > kind.max_prompt_chars):
        raise InvalidJob(
            f"enhanced_prompt must be a string of at most {kind.max_prompt_chars} characters",
            details={"field": "enhanced_prompt"},
        )
    img2img = img2img_of(kind, prompt, metadata, rules)
    if (img2img is None or img2img.denoise is None) and not prompt:  # only an SDXL image-to-image may
        raise InvalidJob("a prompt is required", code="MISSING_PROMPT")
    try:
        tier = requested_tier(metadata)
        request = build_request(kind.name, prompt, metadata, img2img)
        bucket = job_bucket(kind, metadata)
    except InvalidRequest as exc:
        raise InvalidJob(str(exc), details={"field": exc.field}) from None
    return Checked(kind, prompt, metadata, request, bucket, tier, img2img)


def requested_tier(metadata: dict[str, Any]) -> ContentTier:
    try:
        return ContentTier(metadata.get("content_tier", ContentTier.ARTISTIC))
    except ValueError as exc:
        raise InvalidRequest("content_tier", f"must be one of {[t.value for t in ContentTier]}") from exc


def build_request(
    job_type: str, prompt: str, metadata: dict[str, Any], img2img: Img2Img | None = None
) -> GenerationRequest:
    """The generation request a job's metadata asks for, checked against the catalog and bounds; an
    image-to-image job's mode decides its guidance, steps and negative prompt where the job does not."""
    seeds = metadata.get("seeds")
    num_images = metadata.get("num_images", 1)
    if seeds is None and metadata.get("seed") is not None:
        seed = metadata["seed"]  # the first image's; the others follow it (as the seed system's workers do)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise InvalidRequest("seed", f"must be an integer, got {seed!r}")
        count = num_images if isinstance(num_images, int) else 1
        seeds = [seed + index for index in range(count)]
    if seeds is not None and not isinstance(seeds, list):
        raise InvalidRequest("seeds", "must be a list of integers")
    negative = metadata.get("negative_prompt") or ""
    if not isinstance(negative, str):
        raise InvalidRequest("negative_prompt", "must be a string")
    overrides = {key: metadata[key] for key in OVERRIDE_KEYS if metadata.get(key) is not None}
    strength = None
    if img2img is not None:
        overrides |= {key: value for key, value in (("guidance", img2img.guidance), ("steps", img2img.steps))
                      if value is not None}  # fmt: skip
        negative = negative if img2img.negative_prompt is None else img2img.negative_prompt
        strength = img2img.denoise
    return request_for_job(
        get_job_type(job_type), prompt, negative_prompt=negative, num_images=num_images,
        seeds=seeds, strength=strength, **overrides,
    )  # fmt: skip


def job_bucket(job_type: JobType, metadata: dict[str, Any]) -> str:
    bucket = metadata.get("bucket") or job_type.default_bucket
    try:
        return validate_bucket(bucket)
    except ValueError as exc:
        raise InvalidRequest("bucket", str(exc)) from exc
