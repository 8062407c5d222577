"""Recording a job's generated files: image and video rows, the job's links to them, credits used."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from ourvidz.db.models import Image, Job, UsageLog, Video
from ourvidz.generation.results import Asset
from ourvidz.job_status import JobStatus
from ourvidz.jobs.finish import Superseded, owned_by
from ourvidz.jobs.spec import JobSpec


def record_outputs(sessions: sessionmaker[Session], spec: JobSpec, assets: list[Asset], prompt: str) -> None:
    """One images row per image, one videos row per video (with its thumbnail), one usage row."""
    job_type = spec.job_type
    common = {"user_id": spec.user_id, "project_id": spec.project_id, "job_id": spec.id}
    texts = {"prompt": spec.prompt, "enhanced_prompt": prompt if prompt != spec.prompt else None}
    thumbnails = {asset.index: asset.key for asset in assets if asset.type == "thumbnail"}
    with sessions.begin() as session:
        job = session.get_one(Job, spec.id, with_for_update=True)
        if job.status is not JobStatus.PROCESSING or not owned_by(job, spec.flow_run_id):
            raise Superseded(f"job {spec.id} is {job.status} on run {job.flow_run_id}, not this run's")
        for asset in assets:
            details = {
                "bucket": asset.bucket, "storage_key": asset.key, "width": asset.width,
                "height": asset.height, "seed": asset.seed, "size_bytes": asset.size_bytes,
                "quality": job_type.quality, "status": "completed", **common, **texts,
            }  # fmt: skip
            if asset.type == "image":
                image = session.get(Image, job.image_id) if asset.index == 0 and job.image_id else None
                if image is None:
                    image = Image(image_index=asset.index)
                    session.add(image)
                _fill(image, format="png", image_index=asset.index, **details)
                session.flush()
                if asset.index == 0:
                    job.image_id = image.id
            elif asset.type == "video":
                video = session.get(Video, job.video_id) if job.video_id else None
                if video is None:
                    video = Video()
                    session.add(video)
                _fill(video, format="mp4", frames=asset.frames, fps=spec.request.fps, **details)
                _fill(video, duration_seconds=asset.duration, thumbnail_key=thumbnails.get(asset.index))
                session.flush()
                job.video_id = video.id
        images = sum(1 for asset in assets if asset.type == "image") or 1
        session.add(
            UsageLog(
                user_id=spec.user_id, job_id=spec.id, action=job_type.name, format=job_type.format,
                quality=job_type.quality, credits_consumed=job_type.credits_for(images),
                meta={"assets": len(assets), "queue": job_type.queue},
            )
        )  # fmt: skip


def _fill(row: Image | Video, **values: object) -> None:
    for name, value in values.items():
        setattr(row, name, value)
