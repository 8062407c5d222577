"""Generation jobs through a real Prefect server and a real GPU worker process."""

from __future__ import annotations

import io
import time
import uuid
from pathlib import Path

import httpx
from PIL import Image as PILImage
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    TaskRunFilter,
)
from prefect.client.schemas.objects import StateType
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
from prefect.states import Cancelling
from sqlalchemy import select

from ourvidz.db.models import Image, Job, UsageLog, Video
from ourvidz.job_status import JobStatus
from ourvidz.jobs.errors import StorageFailed
from ourvidz.storage import Storage
from tests.e2e.conftest import Orchestra
from tests.overlap import most_at_once

SMALL_SDXL = {"width": 128, "height": 128, "steps": 4}
COMPATIBLE_SDXL = {"width": 128, "height": 128, "steps": 10}  # one batch key: same size and steps
LONG_SDXL = {"width": 1024, "height": 1024, "steps": 100}  # long on the device: the burst queues behind
SMALL_VIDEO = {"width": 64, "height": 64, "steps": 3, "frames": 9}
LONG_VIDEO = {"width": 256, "height": 256, "steps": 100, "frames": 33}  # minutes on this CPU


def _task_names(orchestra: Orchestra, flow_run_id: uuid.UUID) -> list[str]:
    with orchestra.client() as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            task_run_filter=TaskRunFilter(),
        )
    return sorted(run.name.rsplit("-", 1)[0] for run in runs)


def test_a_job_of_each_queue_completes_with_files(orchestra: Orchestra) -> None:
    image_id = orchestra.submit("sdxl_image_fast", metadata={**SMALL_SDXL, "num_images": 3})
    video_id = orchestra.submit("video_fast", metadata=SMALL_VIDEO)
    jobs = orchestra.wait_final([image_id, video_id])
    storage = Storage(orchestra.settings.storage_url)
    with orchestra.sessions() as session:
        for job in jobs.values():
            assert (job.status, job.progress, job.error_message) == (JobStatus.COMPLETED, 100, None)
            assert job.started_at is not None and job.completed_at is not None and job.attempts == 1
            assert job.enhancement_strategy == "none" and job.enhanced_prompt == job.original_prompt
            run = orchestra.wait_flow_run(job)
            assert run.state_type is StateType.COMPLETED
            assert run.name == f"{job.job_type}-{job.id}"
            assert _task_names(orchestra, run.id) == ["conclude", "enhance", "generate", "validate"]
            usage = session.scalars(select(UsageLog).where(UsageLog.job_id == job.id)).one()
            assert usage.credits_consumed == {"sdxl_image_fast": 3 * 1, "video_fast": 3}[job.job_type]
        images = session.scalars(
            select(Image).where(Image.job_id == image_id).order_by(Image.image_index)
        ).all()
        assert [image.image_index for image in images] == [0, 1, 2]
        assert len({image.seed for image in images}) == 3
        assert jobs[image_id].image_id == images[0].id
        for image in images:
            assert image.bucket and image.storage_key
            picture = PILImage.open(io.BytesIO(storage.get(image.bucket, image.storage_key)))
            assert picture.size == (128, 128)
        video = session.scalars(select(Video).where(Video.job_id == video_id)).one()
        assert jobs[video_id].video_id == video.id
        assert (video.frames, video.fps, video.width, video.height) == (9, 16, 64, 64)
        assert video.bucket and video.storage_key and video.thumbnail_key
        assert storage.size(video.bucket, video.storage_key) == video.size_bytes
        assert storage.exists(video.bucket, video.thumbnail_key)


def test_progress_artifact_and_events_reach_prefect(orchestra: Orchestra) -> None:
    job_id = orchestra.submit("sdxl_image_fast", metadata=SMALL_SDXL)
    run = orchestra.wait_flow_run(orchestra.wait_final([job_id])[job_id])
    with orchestra.client() as client:
        latest = client.read_latest_artifacts(artifact_filter=None)  # type: ignore[arg-type]
        of_run = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
        )
    assert not [a for a in latest if a.key and str(job_id) in a.key]  # nothing of a job's is global
    assert [float(a.data) for a in of_run if a.type == "progress"] == [100.0]
    names = _events(orchestra, job_id)
    assert {"ourvidz.job.processing", "ourvidz.job.progress", "ourvidz.job.completed"} <= set(names)


def _events(orchestra: Orchestra, job_id: uuid.UUID, timeout: float = 10) -> list[str]:
    import asyncio

    from prefect.client.orchestration import get_client

    async def read() -> list[str]:
        async with get_client() as client:
            page = await client.read_events(
                EventFilter(
                    event=EventNameFilter(prefix=["ourvidz.job."]),
                    resource=EventResourceFilter(id=[f"ourvidz.job.{job_id}"]),
                ),
                limit=50,
            )
        return [event.event for event in page.events]

    deadline = time.monotonic() + timeout
    names: list[str] = []
    while time.monotonic() < deadline:  # events are written asynchronously by the server
        names = asyncio.run(read())
        if "ourvidz.job.completed" in names or "ourvidz.job.failed" in names:
            break
        time.sleep(0.3)
    return names


def test_a_failing_generation_fails_the_job_once(orchestra: Orchestra) -> None:
    """A bucket whose folder cannot be created makes the generate stage fail: no retry, job failed with
    STORAGE_FAILED; the client reads no server path, the operator reads the cause on the flow run."""
    blocked = Path(orchestra.settings.storage_url.removeprefix("file://")) / "blocked-bucket"
    blocked.parent.mkdir(parents=True, exist_ok=True)
    blocked.mkdir(exist_ok=True)
    (blocked / str(orchestra.user_id)).write_text("a file where a folder must go")
    job_id = orchestra.submit("sdxl_image_fast", metadata={**SMALL_SDXL, "bucket": "blocked-bucket"})
    job = orchestra.wait_final([job_id])[job_id]
    assert job.status is JobStatus.FAILED and job.attempts == 1 and job.error_code == "STORAGE_FAILED"
    assert job.error_message == StorageFailed().message
    run = orchestra.wait_flow_run(job)
    assert run.state_type is StateType.FAILED and run.run_count == 1
    assert run.state is not None and run.state.message is not None
    assert "NotADirectoryError" in run.state.message or "FileExistsError" in run.state.message
    assert _task_names(orchestra, run.id).count("generate") == 1
    time.sleep(2)  # nothing comes back for another try
    with orchestra.client() as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    assert [r.run_count for r in runs] == [1]
    with orchestra.sessions() as session:
        assert session.get_one(Job, job_id).attempts == 1


def test_a_job_refused_by_validation_fails_with_its_reason(orchestra: Orchestra) -> None:
    job_id = orchestra.submit_refused_at_start("sdxl_image_fast", SMALL_SDXL)
    job = orchestra.wait_final([job_id])[job_id]
    assert (job.status, job.error_code, job.attempts) == (JobStatus.FAILED, "CONTENT_TIER_NOT_ALLOWED", 0)
    assert orchestra.wait_flow_run(job).state_type is StateType.FAILED


def test_a_burst_of_sdxl_jobs_batches_within_the_queue_limit(orchestra: Orchestra) -> None:
    """One long job holds the device while compatible jobs arrive behind it, on one worker with 4 SDXL
    slots (the pool's limit, 1 worker x 4): at most four run at once, and the executor runs the waiting
    ones together in one pipeline call, however slowly their runs were dispatched."""
    before = orchestra.worker_status()["batches"].get("sdxl", {})
    blocker = orchestra.submit("sdxl_image_fast", metadata=LONG_SDXL)
    job_ids = [orchestra.submit("sdxl_image_fast", metadata=COMPATIBLE_SDXL) for _ in range(5)]
    jobs = orchestra.wait_final([blocker, *job_ids])
    assert all(job.status is JobStatus.COMPLETED for job in jobs.values())
    assert 2 <= most_at_once([(job.started_at, job.completed_at) for job in jobs.values()]) <= 4
    status = orchestra.worker_status()
    assert status["slots"] == {"sdxl": 4, "wan": 2} and status["high_water"]["sdxl"] <= 4
    calls = status["batches"]["sdxl"]
    batched = {size: n - before.get(size, 0) for size, n in calls.items() if int(size) > 1}
    assert any(batched.values()), f"no pipeline call ran more than one job: {calls}"


def test_cancelling_a_running_job_stops_it_between_steps(orchestra: Orchestra) -> None:
    job_id = orchestra.submit("sdxl_image_fast", metadata={"width": 256, "height": 256, "steps": 100})
    job = orchestra.wait_generating(job_id)
    assert job.flow_run_id is not None
    with orchestra.client() as client:
        client.set_flow_run_state(job.flow_run_id, Cancelling(), force=True)
    job = orchestra.wait_final([job_id], timeout=60)[job_id]
    assert job.status is JobStatus.CANCELLED and 0 < job.progress < 95
    assert orchestra.wait_flow_run(job).state_type is StateType.CANCELLED
    with orchestra.sessions() as session:
        placeholder = session.scalars(select(Image).where(Image.job_id == job_id)).one()
        assert (placeholder.status, placeholder.storage_key) == ("cancelled", None)


def test_an_image_asked_for_during_a_long_video_is_done_while_the_video_generates(
    orchestra: Orchestra,
) -> None:
    """One worker, one device: the SDXL job runs between the video's denoising steps instead of after
    the whole video (which is then cancelled, not waited for)."""
    video_id = orchestra.submit("video_fast", metadata=LONG_VIDEO)
    orchestra.wait_generating(video_id)
    image = orchestra.wait_final([orchestra.submit("sdxl_image_fast", metadata=SMALL_SDXL)], timeout=120)
    with orchestra.sessions() as session:
        video = session.get_one(Job, video_id)
    (done,) = image.values()
    assert done.status is JobStatus.COMPLETED
    assert video.status is JobStatus.PROCESSING and video.progress < 95, "the image waited for the video"
    assert video.flow_run_id is not None
    with orchestra.client() as client:
        client.set_flow_run_state(video.flow_run_id, Cancelling(), force=True)
    assert orchestra.wait_final([video_id], timeout=120)[video_id].status is JobStatus.CANCELLED


def test_the_worker_keeps_one_pipeline_per_model(orchestra: Orchestra) -> None:
    job_ids = [
        orchestra.submit("image_fast", metadata={"width": 64, "height": 64, "steps": 2}) for _ in range(3)
    ]
    orchestra.wait_final(job_ids)
    assert orchestra.worker_status()["model_loads"] == {"sdxl": 1, "wan": 1}


def test_image_to_image_jobs_complete_in_both_modes_and_a_missing_reference_fails_the_job(
    orchestra: Orchestra,
) -> None:
    storage = Storage(orchestra.settings.storage_url)
    buffer = io.BytesIO()
    PILImage.new("RGB", (300, 200), (200, 60, 30)).save(buffer, format="PNG")
    reference = f"user-library/{orchestra.user_id}/reference.png"
    storage.put("user-library", f"{orchestra.user_id}/reference.png", buffer.getvalue())
    modify = orchestra.submit(
        "sdxl_image_fast",
        "a red car",
        metadata={**SMALL_SDXL, "num_images": 3, "reference_image_url": reference},
    )
    copy = orchestra.submit(
        "sdxl_image_fast", "", metadata={"width": 128, "height": 128, "exact_copy_mode": True,
                                         "reference_image_url": reference},
    )  # fmt: skip
    missing = orchestra.submit(
        "sdxl_image_fast", "a red car",
        metadata={**SMALL_SDXL, "reference_image_url": f"user-library/{orchestra.user_id}/gone.png"},
    )  # fmt: skip
    jobs = orchestra.wait_final([modify, copy, missing])
    assert (jobs[modify].status, jobs[copy].status) == (JobStatus.COMPLETED, JobStatus.COMPLETED)
    assert (jobs[modify].meta["reference_mode"], jobs[copy].meta["reference_mode"]) == ("modify", "copy")
    assert (jobs[missing].status, jobs[missing].error_code) == (JobStatus.FAILED, "REFERENCE_NOT_FOUND")
    with orchestra.sessions() as session:
        images = session.scalars(select(Image).where(Image.job_id.in_([modify, copy]))).all()
    assert sorted(image.job_id == modify for image in images) == [False, True, True, True]
    for image in images:
        assert PILImage.open(io.BytesIO(storage.get(image.bucket, image.storage_key))).size == (128, 128)


def test_wan_videos_from_a_first_frame_and_to_a_last_one_complete(orchestra: Orchestra) -> None:
    storage = Storage(orchestra.settings.storage_url)
    for name, colour in (("first", (30, 90, 200)), ("last", (200, 90, 30))):
        buffer = io.BytesIO()
        PILImage.new("RGB", (128, 96), colour).save(buffer, format="PNG")
        storage.put("workspace-temp", f"{orchestra.user_id}/{name}.png", buffer.getvalue())
    first, last = (f"workspace-temp/{orchestra.user_id}/{name}.png" for name in ("first", "last"))
    modes = {"first_frame": {"start_reference_url": first},
             "first_last_frame": {"start_reference_url": first, "end_reference_url": last}}  # fmt: skip
    jobs = {}
    for mode, frames in modes.items():
        body = {
            "job_type": "wan_video_fast",
            "prompt": "a boat at dawn",
            "metadata": {**SMALL_VIDEO, **frames},
        }
        answer = httpx.post(
            f"{orchestra.gateway_url}/queue-job", json=body, headers=orchestra.headers(), timeout=30
        )
        assert answer.status_code == 201, answer.text
        jobs[mode] = uuid.UUID(answer.json()["jobId"])
    ended = orchestra.wait_final(list(jobs.values()))
    for mode, job_id in jobs.items():
        job = ended[job_id]
        assert (job.status, job.meta["reference_mode"]) == (JobStatus.COMPLETED, mode), job.error_message
        with orchestra.sessions() as session:
            video = session.scalars(select(Video).where(Video.job_id == job_id)).one()
        assert (video.frames, video.width, video.height) == (9, 64, 64)


def test_a_run_page_shows_the_job_its_progress_and_its_pictures(orchestra: Orchestra) -> None:
    """What an operator sees on a job's run in the Prefect UI: named and tagged for the job from its
    creation, a summary (prompt, owner, credits), a full progress bar, each picture and a link to each
    file; none of them keyed (the global Artifacts list stays for what is global)."""
    image_id = orchestra.submit(
        "sdxl_image_fast", prompt="a quay at noon", metadata={**SMALL_SDXL, "num_images": 3}
    )
    video_id = orchestra.submit("video_fast", prompt="a quay at night", metadata=SMALL_VIDEO)
    jobs = orchestra.wait_final([image_id, video_id])
    for job in jobs.values():
        assert job.status is JobStatus.COMPLETED
        run = orchestra.wait_flow_run(job)
        queue = "sdxl" if job.job_type == "sdxl_image_fast" else "wan"
        assert run.name == f"{job.job_type}-{job.id}"
        assert {job.job_type, f"queue:{queue}", f"owner:{orchestra.user_id}", "generation"} <= set(run.tags)
        with orchestra.client() as client:
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
            )
        assert [a.key for a in artifacts] == [None] * len(artifacts)
        kind = "image" if job.job_type == "sdxl_image_fast" else "video"
        pictures = [a.data for a in artifacts if a.type == "image"]
        links = [
            a.data for a in artifacts if a.type == "markdown" and str(a.description).startswith(f"{kind} ")
        ]
        assert len(pictures) == len(links) == (3 if kind == "image" else 1), artifacts
        assert all(str(link).startswith(f"[{kind} ") for link in links)
        (summary,) = [a.data for a in artifacts if a.description == f"{job.job_type} job"]
        assert job.original_prompt in summary and str(orchestra.user_id) in summary
        assert "3 credit(s)" in summary  # 3 images at 1 credit; a fast video costs 3
        (progress,) = [a.data for a in artifacts if a.type == "progress"]
        assert progress == 100
        for url in pictures:  # the operator's browser opens them without a user's token
            answer = httpx.get(url, timeout=10)
            assert answer.status_code == 200 and answer.content[:4] in (b"\x89PNG", b"RIFF"), url
