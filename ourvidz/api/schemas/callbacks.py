"""job-callback bodies of every worker generation: the spec's camelCase report, era A2's `assets` as path
strings, era B's `assets` as objects with their own metadata. Every list and string is bounded, so a
report cannot make the gateway write or return without limit.
"""

from __future__ import annotations

import uuid
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ourvidz.api.schemas.common import Metadata, Request, either
from ourvidz.api.schemas.jobs import JobRecord
from ourvidz.jobs.callbacks import WorkerReport
from ourvidz.jobs.outputs import Output
from ourvidz.storage import InvalidStorageKey, validate_key

MAX_FILES = 64  # outputs of one report; the largest batch the seed's workers make is 6
PATH = {"max_length": 2048}
MESSAGE = {"max_length": 10_000}
Path = Annotated[str, StringConstraints(max_length=2048)]
# What the database keeps of a file's numbers; a worker's number outside them is not recorded.
BOUNDS = {"width": 65_536, "height": 65_536, "seed": 2**63 - 1, "size_bytes": 2**63 - 1, "frames": 1_000_000,
          "duration": 1_000_000.0}  # fmt: skip
SIDE = {"ge": 0, "le": BOUNDS["width"]}
VIDEO_SUFFIXES = {".mp4", ".webm", ".mov", ".mkv", ".gif"}


class CallbackAsset(Request):
    """One file of an era-B report: `url` is a storage key or an URL; `metadata` as the worker sent it."""

    type: Literal["image", "video"] | None = None
    url: str | None = either("url", "key", "path", **PATH)
    bucket: str | None = Field(default=None, max_length=64)
    thumbnail_url: str | None = either("thumbnail_url", "thumbnailUrl", **PATH)
    width: int | None = Field(default=None, **SIDE)
    height: int | None = Field(default=None, **SIDE)
    seed: int | None = Field(default=None, ge=0, le=BOUNDS["seed"])
    size_bytes: int | None = Field(default=None, ge=0, le=BOUNDS["size_bytes"])
    metadata: Metadata | None = None


class JobCallbackRequest(Request):
    """The spec's JobCallbackRequest, or the snake_case form with `assets` and `metadata`."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    job_id: uuid.UUID = either("jobId", "job_id", default=...)
    status: Literal["processing", "completed", "failed"]
    file_path: str | None = either("filePath", "file_path", **PATH)
    output_url: str | None = either("outputUrl", "output_url", **PATH)
    image_urls: list[Path] | None = either("imageUrls", "image_urls", max_length=MAX_FILES)
    assets: list[str | CallbackAsset] | None = Field(default=None, max_length=MAX_FILES)
    error_message: str | None = either("errorMessage", "error_message", **MESSAGE)
    enhanced_prompt: str | None = either("enhancedPrompt", "enhanced_prompt", **MESSAGE)
    metadata: Metadata | None = None
    worker_id: str | None = either("worker_id", "workerId", max_length=200)
    progress: int | None = Field(
        default=None, ge=0, le=100, description="Percent done, in a processing report (renews the lease)."
    )

    def report(self) -> WorkerReport:
        """The core's report, with every reported file whichever spelling the worker used."""
        return WorkerReport(
            job_id=self.job_id, status=self.status, outputs=self._outputs(),
            error_message=self.error_message, enhanced_prompt=self.enhanced_prompt, metadata=self.metadata,
            worker_id=self.worker_id, progress=self.progress,
        )  # fmt: skip

    def _outputs(self) -> list[Output]:
        files = [CallbackAsset(url=path) for path in (self.file_path, self.output_url) if path]
        files += [CallbackAsset(url=path) for path in self.image_urls or []]
        files += [
            CallbackAsset(url=asset) if isinstance(asset, str) else asset for asset in self.assets or []
        ]
        outputs: list[Output] = []
        for asset in files:
            if asset.url and not any(output_location(o) == asset.url for o in outputs):
                kind = asset.type or kind_of(asset.url)
                if kind == "image" or not any(o.kind == "video" for o in outputs):  # one video per job
                    index = sum(o.kind == kind for o in outputs)
                    outputs.append(_output(kind, index, asset))
        return outputs


def kind_of(location: str) -> Literal["image", "video"]:
    """A file the worker did not type, by its name (`.mp4` is a video), as the seed's callback does."""
    return "video" if PurePosixPath(location.split("?", 1)[0]).suffix.lower() in VIDEO_SUFFIXES else "image"


def output_location(output: Output) -> str | None:
    return output.key or output.url


def _output(kind: Literal["image", "video"], index: int, asset: CallbackAsset) -> Output:
    """A storage key stays a key (in the asset's bucket, if it names one); anything else is a URL."""
    details = asset.metadata or {}
    numbers = {
        "width": asset.width if asset.width is not None else details.get("width"),
        "height": asset.height if asset.height is not None else details.get("height"),
        "seed": asset.seed if asset.seed is not None else details.get("seed", details.get("generation_seed")),
        "size_bytes": asset.size_bytes if asset.size_bytes is not None else details.get("file_size_bytes"),
        "duration": details.get("duration_seconds"),
        "frames": details.get("frame_num"),
    }
    numbers = {name: value for name, value in numbers.items() if _in_bounds(name, value)}
    assert asset.url is not None
    try:
        key = validate_key(asset.url)
    except InvalidStorageKey:
        return Output(kind=kind, index=index, url=asset.url, **numbers)
    thumbnail = _key_or_none(asset.thumbnail_url)
    return Output(kind=kind, index=index, bucket=asset.bucket, key=key, thumbnail_key=thumbnail, **numbers)


def _key_or_none(location: str | None) -> str | None:
    if location is None:
        return None
    try:
        return validate_key(location)
    except InvalidStorageKey:
        return None


def _in_bounds(name: str, value: Any) -> bool:
    kinds = int | float if name == "duration" else int
    return isinstance(value, kinds) and not isinstance(value, bool) and 0 <= value <= BOUNDS[name]


class CallbackResponse(BaseModel):
    """The spec's answer, plus era B's `jobId` and `status`."""

    success: bool = True
    job: JobRecord
    message: str
    jobId: uuid.UUID
    status: str
