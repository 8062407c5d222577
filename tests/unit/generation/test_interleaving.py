"""Fair use of one device: an SDXL image submitted while a long Wan video generates runs between the
video's denoising steps and is done long before it; a request that waits is told its position each
time the device moves on (tiny pipelines, CPU)."""

from __future__ import annotations

import threading

from ourvidz.generation.control import Control
from ourvidz.generation.request import request_for_job
from ourvidz.generation.runtime import GenerationRuntime
from tests.unit.generation.helpers import same_image

VIDEO_STEPS = 30


def test_an_image_submitted_during_a_long_video_starts_at_the_next_video_step(
    runtime: GenerationRuntime,
) -> None:
    video_steps: list[int] = []
    image_started_at: list[int] = []  # the video's steps when the image made its first step
    positions: list[int] = []
    video_going = threading.Event()

    def video_progress(step: int, _total: int) -> None:
        video_steps.append(step)
        if step >= 3:
            video_going.set()

    def image_progress(step: int, _total: int) -> None:
        if step == 1:
            image_started_at.append(len(video_steps))

    video = request_for_job(
        "video_fast", "a harbour", width=64, height=64, frames=5, steps=VIDEO_STEPS, seeds=[1]
    )
    image = request_for_job("sdxl_image_fast", "a lighthouse", width=64, height=64, steps=2, seeds=[2])
    video_done = runtime.submit(video, Control(progress=video_progress))
    assert video_going.wait(120), "the video did not start"
    image_done = runtime.submit(image, Control(progress=image_progress, waiting=positions.append))
    submitted_at = len(video_steps)
    assert image_done.result(timeout=120).shape == (1, 1, 64, 64, 3)
    assert not video_done.done(), "the image waited for the whole video"
    assert image_started_at and image_started_at[0] <= submitted_at + 1
    assert positions and positions[0] == 0  # it was next, and told so while the video ran
    interleaved = video_done.result(timeout=300)
    assert video_steps == list(range(1, VIDEO_STEPS + 1))  # the video went on where it was
    alone = runtime.submit(video).result(timeout=300)
    assert interleaved.shape == alone.shape == (1, 5, 64, 64, 3)
    assert all(same_image(a, b) for a, b in zip(interleaved[0], alone[0], strict=True))  # same pixels


def test_requests_behind_a_call_are_told_their_positions(runtime: GenerationRuntime) -> None:
    release = threading.Event()
    runtime.executor.run(lambda _pipelines: release.wait(30))
    told: dict[str, list[int]] = {"first": [], "second": []}
    small = {"width": 64, "height": 64, "steps": 2}
    first = runtime.submit(
        request_for_job("image_fast", "a", seeds=[1], **small), Control(waiting=told["first"].append)
    )
    second = runtime.submit(
        request_for_job("image_fast", "b", seeds=[2], **small), Control(waiting=told["second"].append)
    )
    release.set()
    first.result(timeout=120), second.result(timeout=120)
    assert told["first"][0] == 0 and told["second"][0] == 1
    assert told["second"][-1] == 0  # moved up once the first one ran
