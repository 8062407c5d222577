"""Request and response bodies of the gateway, in the spec's shapes (camelCase) and the later snake_case.

Requests accept both spellings of each field. Responses use the spec's names; records (jobs, images,
videos) use the database's snake_case column names, as the spec's Supabase tables do.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from ourvidz.db.models import Job
from ourvidz.jobs.callbacks import WorkerReport
from ourvidz.jobs.create import JobRequest, Url
from ourvidz.jobs.outputs import Output
from ourvidz.jobs.view import StoredFile
from ourvidz.storage import InvalidStorageKey, validate_key


def _either(camel: str, snake: str) -> Any:
    return Field(default=None, validation_alias=AliasChoices(camel, snake))


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @model_validator(mode="before")
    @classmethod
    def _no_nul_characters(cls, data: Any) -> Any:
        """PostgreSQL stores no NUL character in text or JSON: refused here as a client error (400),
        not left to fail as a database error (500) after the request was accepted."""
        if _has_nul(data):
            raise ValueError("text must not contain NUL (\\u0000) characters")
        return data


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(item) for item in value)
    return False


class QueueJobRequest(Request):
    """The spec's QueueJobRequest, or the later form with `job_type` and `prompt` at the top level."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, json_schema_extra={"examples": [
        {"jobType": "sdxl_image_fast", "metadata": {"prompt": "beautiful landscape", "quality": "fast"}},
        {"job_type": "wan_video_fast", "prompt": "a boat at dawn", "num_images": 1},
    ]})  # fmt: skip

    job_type: str = Field(validation_alias=AliasChoices("jobType", "job_type"), min_length=1, max_length=64)
    prompt: str | None = Field(default=None, max_length=10_000)
    metadata: dict[str, Any] | None = None
    project_id: uuid.UUID | None = _either("projectId", "project_id")
    video_id: uuid.UUID | None = _either("videoId", "video_id")
    image_id: uuid.UUID | None = _either("imageId", "image_id")
    num_images: int | None = _either("numImages", "num_images")
    webhook_url: Url | None = _either("webhookUrl", "webhook_url")

    def job_request(self, user_id: uuid.UUID, idempotency_key: str | None) -> JobRequest:
        """The core's request: the prompt from the top level or `metadata.prompt`, the rest of the
        metadata as the job's options (`num_images` among them)."""
        metadata = dict(self.metadata or {})
        prompt = metadata.pop("prompt", None)
        if self.prompt is not None:
            prompt = self.prompt
        if self.num_images is not None:
            metadata["num_images"] = self.num_images
        return JobRequest(
            user_id=user_id, job_type=self.job_type, prompt=prompt if isinstance(prompt, str) else None,
            metadata=metadata, project_id=self.project_id, image_id=self.image_id, video_id=self.video_id,
            webhook_url=None if self.webhook_url is None else str(self.webhook_url),
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
    success: bool = True
    job: JobRecord
    message: str
    queueLength: int
    modelVariant: str
    debug: QueueJobDebug


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


class JobCallbackRequest(Request):
    """The spec's JobCallbackRequest, or the snake_case form with `assets` and `metadata`."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    job_id: uuid.UUID = Field(validation_alias=AliasChoices("jobId", "job_id"))
    status: Literal["processing", "completed", "failed"]
    file_path: str | None = _either("filePath", "file_path")
    output_url: str | None = _either("outputUrl", "output_url")
    image_urls: list[str] | None = _either("imageUrls", "image_urls")
    assets: list[dict[str, Any]] | None = None
    error_message: str | None = Field(
        default=None, validation_alias=AliasChoices("errorMessage", "error_message"), max_length=10_000
    )
    enhanced_prompt: str | None = Field(
        default=None, validation_alias=AliasChoices("enhancedPrompt", "enhanced_prompt"), max_length=10_000
    )
    metadata: dict[str, Any] | None = None

    def report(self) -> WorkerReport:
        """The core's report, with every reported file whichever spelling the worker used."""
        return WorkerReport(
            job_id=self.job_id, status=self.status, outputs=self._outputs(),
            error_message=self.error_message, enhanced_prompt=self.enhanced_prompt, metadata=self.metadata,
        )  # fmt: skip

    def _outputs(self) -> list[Output]:
        images = [*([self.file_path] if self.file_path else []), *(self.image_urls or [])]
        videos = [self.output_url] if self.output_url else []
        details: list[dict[str, Any]] = []
        for asset in self.assets or []:
            location = asset.get("key") or asset.get("url") or asset.get("path")
            if isinstance(location, str):
                kind = videos if asset.get("type") == "video" else images
                kind.append(location)
                details.append({**asset, "location": location})
        extra = {d["location"]: d for d in details}
        outputs = [_output("image", index, path, extra.get(path)) for index, path in enumerate(images)]
        outputs += [_output("video", 0, path, extra.get(path)) for path in videos[:1]]
        return outputs


def _output(kind: str, index: int, location: str, asset: dict[str, Any] | None) -> Output:
    """A storage key stays a key (in the asset's bucket, if it names one); anything else is a URL."""
    asset = asset or {}
    names = ("width", "height", "seed", "size_bytes")
    numbers = {name: asset[name] for name in names if isinstance(asset.get(name), int)}
    try:
        key = validate_key(location)
    except InvalidStorageKey:
        return Output(kind=kind, index=index, url=location, **numbers)  # type: ignore[arg-type]
    bucket = asset.get("bucket") if isinstance(asset.get("bucket"), str) else None
    return Output(kind=kind, index=index, bucket=bucket, key=key, **numbers)  # type: ignore[arg-type]


class CallbackResponse(BaseModel):
    success: bool = True
    job: JobRecord
    message: str


class EnhancePromptRequest(Request):
    prompt: str = Field(min_length=1, max_length=10_000)
    job_type: str = Field(validation_alias=AliasChoices("jobType", "job_type"), max_length=64)
    format: str | None = Field(default=None, max_length=16)
    quality: Literal["fast", "high"] | None = None
    selected_model: Literal["qwen_instruct", "qwen_base"] | None = _either("selectedModel", "selected_model")
    user_id: uuid.UUID | None = None
    regeneration: bool = False
    selected_presets: list[str] | None = _either("selectedPresets", "selected_presets")


class EnhancePromptResponse(BaseModel):
    success: bool = True
    original_prompt: str
    enhanced_prompt: str
    enhancement_strategy: str
    enhancement_metadata: dict[str, Any]
    optimization: dict[str, Any]


class ChatRequest(Request):
    message: str = Field(min_length=1, max_length=20_000)
    conversation_id: uuid.UUID | None = None
    project_id: uuid.UUID | None = None
    content_tier: Literal["artistic", "explicit", "unrestricted"] | None = Field(
        default=None, description="The least tier for this turn; a conversation never goes below its tier"
    )
    stream: bool | None = Field(
        default=None,
        description="true: answer `text/event-stream` (`delta` events, then `done` with the ChatResponse, "
        "or `error`); false: JSON; absent: as the Accept header prefers",
    )


class ChatResponse(BaseModel):
    """One chat turn's answer: the JSON body, or the data of the stream's `done` event."""

    success: bool = True
    conversation_id: uuid.UUID
    response: str
    message_id: uuid.UUID = Field(description="The stored assistant message")
    content_tier: str = Field(
        description="The tier this turn runs at: the conversation's, or the detected or asked-for if higher"
    )
    sdxl_prompt: str = Field(description="The user's side of the conversation as an SDXL prompt (75 tokens)")


class AdminImageRequest(Request):
    prompt: str = Field(min_length=1, max_length=10_000)
    model: Literal["sdxl", "wan"]
    quality: Literal["fast", "high"]

    def queue_request(self) -> QueueJobRequest:
        job_type = f"sdxl_image_{self.quality}" if self.model == "sdxl" else f"image_{self.quality}"
        return QueueJobRequest.model_validate({"job_type": job_type, "prompt": self.prompt})


class UpdateWorkerUrlRequest(Request):
    worker_type: Literal["sdxl", "wan", "video", "chat"] = Field(
        validation_alias=AliasChoices("workerType", "worker_type")
    )
    url: Url


class RegisterChatWorkerRequest(Request):
    worker_url: Url = Field(validation_alias=AliasChoices("workerUrl", "worker_url"))
    capabilities: list[str] = Field(default_factory=list, max_length=50)
    max_concurrent_chats: int = Field(
        default=1,
        ge=1,
        le=10_000,
        validation_alias=AliasChoices("maxConcurrentChats", "max_concurrent_chats"),
    )
    protocol: Literal["openai", "ourvidz"] = Field(
        default="openai",
        description="`openai`: POST /v1/chat/completions; `ourvidz`: the OurVidz chat worker's "
        "POST /enhance and POST /chat.",
    )


class RegistrationInfo(BaseModel):
    autoRegistered: bool
    registrationMethod: str
    detectionMethod: str
    lastUpdated: str
    lastRegistrationAttempt: str


class WorkerUrlResponse(BaseModel):
    success: bool
    workerUrl: str
    isHealthy: bool
    healthError: str | None = None
    registrationInfo: RegistrationInfo | None = None


class WorkerHealth(BaseModel):
    status: Literal["healthy", "unhealthy"]
    responseTime: float


class HealthCheckResponse(BaseModel):
    workers: dict[str, WorkerHealth]
    overallStatus: Literal["healthy", "degraded", "unhealthy"]


class CheckResult(BaseModel):
    ok: bool
    seconds: float
    detail: str


class SelfCheckResponse(BaseModel):
    success: bool
    checks: dict[str, CheckResult]


class SimpleResponse(BaseModel):
    success: bool = True
    message: str
    details: dict[str, Any] = Field(default_factory=dict)
