"""A job's generated files on its rows: image and video rows, the job's links to them, the credits used.

Files come from the generation flow (`outputs_of(assets)`) or from a worker outside Prefect that reports
them in its callback; either way they are recorded here, in the transaction that completes the job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from ourvidz.catalog import UnknownJobType, get_job_type
from ourvidz.db.models import Image, Job, UsageLog, Video
from ourvidz.generation.results import Asset


@dataclass(frozen=True, slots=True)
class Output:
    """One generated file: in our storage (`bucket`, `key`), or somewhere a worker put it (`url`)."""

    kind: Literal["image", "video"]
    index: int = 0
    bucket: str | None = None
    key: str | None = None
    url: str | None = None
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    size_bytes: int | None = None
    frames: int | None = None
    duration: float | None = None
    thumbnail_key: str | None = None

    def announced(self) -> list[dict[str, Any]]:
        """How the file appears in the job's events and webhooks (a video adds its thumbnail)."""
        place = {"bucket": self.bucket, "key": self.key} if self.key else {"url": self.url}
        shown = [{"type": self.kind, **place}]
        if self.thumbnail_key:
            shown.append({"type": "thumbnail", "bucket": self.bucket, "key": self.thumbnail_key})
        return shown


def outputs_of(assets: Sequence[Asset]) -> list[Output]:
    """The generation runtime's stored assets as outputs (a video's thumbnail joins its video)."""
    thumbnails = {asset.index: asset.key for asset in assets if asset.type == "thumbnail"}
    return [
        Output(
            kind=asset.type,
            index=asset.index,
            bucket=asset.bucket,
            key=asset.key,
            width=asset.width,
            height=asset.height,
            seed=asset.seed,
            size_bytes=asset.size_bytes,
            frames=asset.frames,
            duration=asset.duration,
            thumbnail_key=thumbnails.get(asset.index),
        )
        for asset in assets
        if asset.type in ("image", "video")
    ]


def record_outputs(session: Session, job: Job, outputs: Sequence[Output], prompt: str | None) -> None:
    """One images row per image (the job's placeholder is image 0), one videos row per video, and one
    usage row with the credits, in the caller's transaction."""
    fps = _job_fps(job)
    texts = {
        "prompt": job.original_prompt,
        "enhanced_prompt": prompt if prompt != job.original_prompt else None,
    }
    common = {"user_id": job.user_id, "project_id": job.project_id, "job_id": job.id, "quality": job.quality}
    images = {i.image_index: i for i in session.scalars(select(Image).where(Image.job_id == job.id))}
    bucket = _bucket(job)
    for output in outputs:
        details = {
            "bucket": (output.bucket or bucket) if output.key else None, "storage_key": output.key,
            "width": output.width, "height": output.height, "seed": output.seed,
            "size_bytes": output.size_bytes, "status": "completed", **common, **texts,
        }  # fmt: skip
        if output.kind == "image":
            image = images.get(output.index)
            if image is None and output.index == 0 and job.image_id:
                image = session.get(Image, job.image_id)
            if image is None:
                image = Image(image_index=output.index)
                session.add(image)
            _fill(image, format="png", image_index=output.index, **details)
            _keep_url(image, output)
            session.flush()
            if output.index == 0:
                job.image_id = image.id
        else:
            video = session.get(Video, job.video_id) if job.video_id else None
            if video is None:
                video = Video()
                session.add(video)
            _fill(video, format="mp4", frames=output.frames, fps=fps, **details)
            _fill(video, duration_seconds=output.duration, thumbnail_key=output.thumbnail_key)
            _keep_url(video, output)
            session.flush()
            job.video_id = video.id
    if outputs:
        _charge(session, job, outputs)


def _charge(session: Session, job: Job, outputs: Sequence[Output]) -> None:
    images = sum(1 for output in outputs if output.kind == "image") or 1
    try:
        job_type = get_job_type(job.job_type)
    except UnknownJobType:  # a type that left the catalog: its rows are kept, nothing is charged
        return
    session.add(
        UsageLog(
            user_id=job.user_id, job_id=job.id, action=job_type.name, format=job_type.format,
            quality=job_type.quality, credits_consumed=job_type.credits_for(images),
            meta={"assets": len(outputs), "queue": job_type.queue},
        )
    )  # fmt: skip


def _bucket(job: Job) -> str:
    """Where a reported key lives when the report names no bucket: the job's bucket."""
    return str((job.meta or {}).get("bucket") or job.job_type)


def _job_fps(job: Job) -> int | None:
    try:
        return get_job_type(job.job_type).fps
    except UnknownJobType:
        return None


def _keep_url(row: Image | Video, output: Output) -> None:
    if output.url and not output.key:
        row.meta = {**(row.meta or {}), "url": output.url}


def _fill(row: Image | Video, **values: object) -> None:
    for name, value in values.items():
        setattr(row, name, value)
