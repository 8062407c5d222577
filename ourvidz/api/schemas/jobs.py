"""queue-job, a job's status and cancellation: the bodies of both eras of the seed's frontend.

Era A sends `{jobType, metadata{prompt, ...}, projectId, videoId, imageId}`; era B sends `job_type`,
`prompt` and the generation options at the top level (`seed`, `steps`, `guidance_scale`,
`negative_prompt`, `num_images`, ...) next to a `metadata` object. Both map onto one core request;
fields this gateway does not read are kept in the job's metadata. Records (jobs, images, videos) use
the database's snake_case column names, as the spec's Supabase tables do.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ourvidz.api.schemas.common import FreeList, Metadata, Request, either
from ourvidz.api.schemas.options import InvalidOption, job_options
from ourvidz.catalog import UnknownJobType, get_job_type
from ourvidz.db.models import Job
from ourvidz.generation.request import GUIDANCE_RANGE, MAX_PROMPT_CHARS, SEED_LIMIT, STEPS_RANGE
from ourvidz.jobs.create import JobRequest, Url
from ourvidz.jobs.errors import InvalidJob
from ourvidz.jobs.view import StoredFile

TEXT = {"max_length": MAX_PROMPT_CHARS}
FRACTION = {"ge": 0.0, "le": 1.0}
# Top-level options of era B, read by `job_options` under these names.
OPTION_FIELDS = (
    "seed", "steps", "guidance_scale", "negative_prompt", "num_images", "enhanced_prompt", "compel_enabled",
    "compel_weights", "reference_image_url", "reference_strength", "denoise_strength",
)  # fmt: skip
# Recorded in the job's metadata as sent.
RECORDED_FIELDS = ("quality", "format", "model_type", "bypass_enhancement", "hard_override")


class QueueJobRequest(Request):
    """The spec's QueueJobRequest (era A), or era B's with `job_type`, `prompt` and the options at the
    top level. Fields not listed here are kept in the job's metadata."""

    model_config = ConfigDict(extra="allow", str_strip_whitespace=True, json_schema_extra={"examples": [
        {"jobType": "sdxl_image_fast", "metadata": {"prompt": "beautiful landscape", "quality": "fast"}},
        {"job_type": "sdxl_image_high", "prompt": "a red car on a coastal road", "quality": "high",
         "seed": None, "num_images": 3, "steps": 25, "guidance_scale": 7.5, "negative_prompt": "",
         "metadata": {"aspect_ratio": "16:9", "contentType": "sfw", "user_requested_enhancement": True}},
    ]})  # fmt: skip

    job_type: str = either("jobType", "job_type", default=..., min_length=1, max_length=64)
    prompt: str | None = Field(default=None, **TEXT)
    original_prompt: str | None = either("original_prompt", "originalPrompt", **TEXT)
    enhanced_prompt: str | None = either("enhanced_prompt", "enhancedPrompt", **TEXT)
    metadata: Metadata | None = None
    project_id: uuid.UUID | None = either("projectId", "project_id")
    video_id: uuid.UUID | None = either("videoId", "video_id")
    image_id: uuid.UUID | None = either("imageId", "image_id")
    webhook_url: Url | None = either("webhookUrl", "webhook_url")
    quality: Literal["fast", "high"] | None = None
    format: str | None = Field(default=None, max_length=16)
    model_type: str | None = either("model_type", "modelType", max_length=64)
    seed: int | None = Field(default=None, ge=0, lt=SEED_LIMIT)
    num_images: int | None = either("num_images", "numImages", ge=0, le=1000)
    steps: int | None = Field(default=None, ge=STEPS_RANGE[0], le=STEPS_RANGE[1])
    guidance_scale: float | None = either(
        "guidance_scale", "guidanceScale", ge=GUIDANCE_RANGE[0], le=GUIDANCE_RANGE[1]
    )
    negative_prompt: str | None = either("negative_prompt", "negativePrompt", **TEXT)
    reference_image_url: str | None = either("reference_image_url", "referenceImageUrl", max_length=2048)
    reference_strength: float | None = either("reference_strength", "referenceStrength", **FRACTION)
    denoise_strength: float | None = either("denoise_strength", "denoiseStrength", **FRACTION)
    compel_enabled: bool | None = either("compel_enabled", "compelEnabled")
    compel_weights: Annotated[str, StringConstraints(**TEXT)] | Metadata | FreeList | None = either(
        "compel_weights", "compelWeights"
    )
    bypass_enhancement: bool | None = None
    hard_override: bool | None = None

    def job_request(self, user_id: uuid.UUID, idempotency_key: str | None) -> JobRequest:
        """The core's request: the prompt from the top level or `metadata.prompt`, the options from
        either place (`job_options`), what the gateway does not read kept in the metadata."""
        metadata = {**(self.model_extra or {}), **(self.metadata or {})}
        prompt = metadata.pop("prompt", None)
        prompt = self.prompt if self.prompt is not None else self.original_prompt or prompt
        try:
            job_type = get_job_type(self.job_type)
        except UnknownJobType as exc:
            raise InvalidJob(str(exc), code="INVALID_JOB_TYPE", details={"valid": exc.valid}) from None
        top = {name: getattr(self, name) for name in OPTION_FIELDS}
        try:
            options = job_options(job_type, top, metadata)
        except InvalidOption as exc:
            raise InvalidJob(str(exc), details={"field": exc.field}) from None
        recorded = {name: getattr(self, name) for name in RECORDED_FIELDS if getattr(self, name) is not None}
        return JobRequest(
            user_id=user_id, job_type=job_type.name, prompt=prompt if isinstance(prompt, str) else None,
            metadata={**metadata, **recorded, **options}, project_id=self.project_id, image_id=self.image_id,
            video_id=self.video_id, webhook_url=None if self.webhook_url is None else str(self.webhook_url),
            idempotency_key=idempotency_key,
        )  # fmt: skip


class JobRecord(BaseModel):
    """The spec's JobRecord: a row of `jobs`."""

    id: uuid.UUID
    user_id: uuid.UUID
    job_type: str
    status: str
    progress: int
    error_message: str | None
    error_code: str | None = Field(description="why the job failed, as a stable code (None unless failed)")
    attempts: int
    max_attempts: int
    metadata: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    project_id: uuid.UUID | None
    image_id: uuid.UUID | None
    video_id: uuid.UUID | None
    format: str | None
    quality: str | None
    model_type: str | None
    original_prompt: str | None
    enhanced_prompt: str | None
    enhancement_strategy: str | None
    template_name: str | None
    queue: str | None
    flow_run_id: uuid.UUID | None

    @classmethod
    def of(cls, job: Job) -> JobRecord:
        fields = {name: getattr(job, name) for name in cls.model_fields if name != "metadata"}
        return cls(metadata=dict(job.meta or {}), **fields)


class QueueJobDebug(BaseModel):
    userId: uuid.UUID
    hasPrompt: bool
    redisConfigured: bool
    timestamp: datetime
    workersOnline: bool | None = Field(
        description="whether a GPU worker serves the job's queue now; None when Prefect could not be asked"
    )
    idempotentReplay: bool = False


class QueueJobResponse(BaseModel):
    """The spec's QueueJobResponse, plus what era B's frontend reads (`jobId`, `status`, `queueName`)."""

    success: bool = True
    job: JobRecord
    message: str
    queueLength: int
    modelVariant: str
    debug: QueueJobDebug
    jobId: uuid.UUID
    status: str
    queueName: str = Field(
        description="the seed system's name of the job's queue: `sdxl_queue` or `wan_queue`"
    )


class AssetOut(BaseModel):
    type: Literal["image", "video", "thumbnail"]
    url: str = Field(description="gateway path that serves the file to its owner")
    bucket: str
    key: str
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    size_bytes: int | None = None
    frames: int | None = None
    duration: float | None = None

    @classmethod
    def of(cls, file: StoredFile) -> AssetOut:
        return cls(
            type=file.type, url=f"/files/{file.bucket}/{file.key}", bucket=file.bucket, key=file.key,
            width=file.width, height=file.height, seed=file.seed, size_bytes=file.size_bytes,
            frames=file.frames, duration=file.duration,
        )  # fmt: skip


class JobStatusResponse(BaseModel):
    success: bool = True
    job: JobRecord
    progress: int
    assets: list[AssetOut]
    error: str | None


class CancelResponse(BaseModel):
    success: bool = True
    job: JobRecord
    message: str


class AdminImageRequest(Request):
    prompt: str = Field(min_length=1, **TEXT)
    model: Literal["sdxl", "wan"]
    quality: Literal["fast", "high"]

    def queue_request(self) -> QueueJobRequest:
        job_type = f"sdxl_image_{self.quality}" if self.model == "sdxl" else f"image_{self.quality}"
        return QueueJobRequest.model_validate({"job_type": job_type, "prompt": self.prompt})
