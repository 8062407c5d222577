"""Tiny pipelines end to end on the CPU: files in storage, seeds, warm models, progress, cancellation."""

from __future__ import annotations

import asyncio
import io
import threading
import uuid
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from ourvidz.catalog import JOB_TYPES
from ourvidz.generation.control import Cancelled, Control
from ourvidz.generation.executor import ExecutorClosed
from ourvidz.generation.request import request_for_job
from ourvidz.generation.results import OutputPlace
from ourvidz.generation.runtime import GenerationRuntime
from ourvidz.generation.tiny import tiny_path
from ourvidz.storage import Storage
from tests.unit.generation.helpers import same_image

# Small sizes keep CPU time low; the SDXL fast type runs at its catalog default (1024x1024).
OVERRIDES = {
    "sdxl_image_fast": {},
    "sdxl_image_high": {"num_images": 3, "width": 256, "height": 192, "steps": 3},
    "image_fast": {"width": 128, "height": 64, "steps": 3},
    "image_high": {"width": 64, "height": 96, "steps": 3},
    "video_fast": {"width": 96, "height": 64, "frames": 9, "steps": 2},
    "video_high": {"width": 64, "height": 64, "frames": 5, "steps": 2},
    "image7b_fast_enhanced": {"width": 64, "height": 64, "steps": 2},
    "image7b_high_enhanced": {"width": 64, "height": 64, "steps": 2},
    "video7b_fast_enhanced": {"width": 64, "height": 64, "frames": 13, "steps": 2},
    "video7b_high_enhanced": {"width": 64, "height": 64, "frames": 5, "steps": 2},
}


def _place(job_type: str) -> OutputPlace:
    return OutputPlace(bucket=job_type, user_id=uuid.uuid4(), job_id=uuid.uuid4())


def _decode_mp4(data: bytes, tmp_path: Path) -> tuple[tuple[int, int], int]:
    path = tmp_path / "check.mp4"
    path.write_bytes(data)
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = reader.__next__()
    frames = sum(1 for _ in reader)
    return meta["size"], frames


def test_overrides_cover_every_job_type() -> None:
    assert set(OVERRIDES) == set(JOB_TYPES)


@pytest.mark.parametrize("job_type", sorted(OVERRIDES))
def test_every_job_type_makes_decodable_files(
    runtime: GenerationRuntime, job_type: str, tmp_path: Path
) -> None:
    request = request_for_job(job_type, "a lighthouse on a cliff at dusk", **OVERRIDES[job_type])
    place = _place(job_type)
    result = runtime.generate(request, place)
    storage: Storage = runtime.storage
    size = (request.width, request.height)
    prefix = f"{place.user_id}/{place.job_id}/"
    if JOB_TYPES[job_type].output == "image":
        assert [a.type for a in result.assets] == ["image"] * request.num_images
        assert result.seeds == list(request.seeds)
        for index, asset in enumerate(result.assets):
            assert asset.key == f"{prefix}{index}.png" and asset.bucket == job_type
            data = storage.get(job_type, asset.key)
            assert asset.size_bytes == len(data) > 0
            image = Image.open(io.BytesIO(data))
            assert image.format == "PNG" and image.size == size == (asset.width, asset.height)
            assert image.mode == "RGB"
        return
    video, thumbnail = result.assets
    assert (video.type, video.key, thumbnail.type, thumbnail.key) == (
        "video", f"{prefix}0.mp4", "thumbnail", f"{prefix}0.webp",
    )  # fmt: skip
    assert video.frames == request.frames and video.duration == request.frames / 16
    assert video.seed == thumbnail.seed == request.seeds[0]
    data = storage.get(job_type, video.key)
    assert video.size_bytes == len(data)
    assert _decode_mp4(data, tmp_path) == (size, request.frames)
    thumb = Image.open(io.BytesIO(storage.get(job_type, thumbnail.key)))
    assert thumb.format == "WEBP" and thumb.size == size


def _pixels(runtime: GenerationRuntime, job_type: str, seeds: list[int], **overrides: object) -> np.ndarray:
    request = request_for_job(job_type, "a red kite over the sea", seeds=seeds, **overrides)
    return runtime.submit(request).result()


@pytest.mark.parametrize(
    ("job_type", "overrides"),
    [("sdxl_image_fast", {"width": 128, "height": 128, "steps": 3}), ("video_fast", OVERRIDES["video_fast"])],
)
def test_same_seed_same_pixels(runtime: GenerationRuntime, job_type: str, overrides: dict) -> None:
    first = _pixels(runtime, job_type, [1234], **overrides)
    again = _pixels(runtime, job_type, [1234], **overrides)
    other = _pixels(runtime, job_type, [4321], **overrides)
    assert first.dtype == np.uint8 and first.shape[0] == 1
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_each_image_gets_its_own_seed(runtime: GenerationRuntime) -> None:
    small = {"width": 64, "height": 64, "steps": 2}
    three = runtime.submit(
        request_for_job("sdxl_image_high", "a red kite", num_images=3, seeds=[5, 6, 7], **small)
    ).result()
    alone = runtime.submit(request_for_job("sdxl_image_high", "a red kite", seeds=[6], **small)).result()
    assert three.shape == (3, 1, 64, 64, 3)
    assert not np.array_equal(three[0], three[1])
    assert same_image(three[1], alone[0])


def test_models_load_once_per_process(fresh_runtime: GenerationRuntime) -> None:
    small = {"width": 64, "height": 64, "steps": 2}
    for _ in range(3):
        fresh_runtime.submit(request_for_job("sdxl_image_fast", "a boat", **small)).result()
        fresh_runtime.submit(request_for_job("image_fast", "a boat", **small)).result()
        fresh_runtime.submit(request_for_job("video_fast", "a boat", frames=5, **small)).result()
    loads = fresh_runtime.pipelines.loads
    assert sorted(key.family for key in loads) == ["sdxl", "wan"]
    assert all(count == 1 for count in loads.values())
    assert {key.dtype for key in loads} == {"torch.float32"} and {key.device for key in loads} == {"cpu"}


def test_progress_reports_every_step(runtime: GenerationRuntime) -> None:
    seen: list[tuple[int, int]] = []
    request = request_for_job("image_fast", "a boat", width=64, height=64, steps=4)
    runtime.submit(request, Control(progress=lambda step, total: seen.append((step, total)))).result()
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


@pytest.mark.parametrize("job_type", ["sdxl_image_fast", "video_fast"])
def test_cancel_stops_between_steps(runtime: GenerationRuntime, job_type: str) -> None:
    cancel = threading.Event()
    seen: list[int] = []

    def progress(step: int, total: int) -> None:
        seen.append(step)
        if step == 2:
            cancel.set()

    request = request_for_job(job_type, "a boat", width=64, height=64, steps=10)
    place = _place(job_type)
    with pytest.raises(Cancelled):
        runtime.generate(request, place, Control(progress=progress, cancel=cancel))
    assert seen == [1, 2]
    assert not runtime.storage.exists(job_type, f"{place.user_id}/{place.job_id}/0.png")


def test_cancel_before_start_does_no_model_work(fresh_runtime: GenerationRuntime) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        fresh_runtime.submit(request_for_job("image_fast", "a boat"), Control(cancel=cancel)).result()
    assert fresh_runtime.pipelines.total_loads == 0


def test_async_generation(runtime: GenerationRuntime) -> None:
    request = request_for_job("image_fast", "a boat", width=64, height=64, steps=2)
    result = asyncio.run(runtime.generate_async(request, _place("image_fast")))
    assert [asset.type for asset in result.assets] == ["image"]


def test_shut_down_executor_refuses_work(fresh_runtime: GenerationRuntime) -> None:
    fresh_runtime.close()
    with pytest.raises(ExecutorClosed):
        fresh_runtime.submit(request_for_job("image_fast", "a boat"))


def test_production_profile_loads_a_local_folder(runtime: GenerationRuntime, tmp_path: Path) -> None:
    """Production weights from a local folder load through the same path (here: the tiny SDXL folder)."""
    assert runtime.settings.models_dir is not None
    folder = str(tiny_path(runtime.settings.models_dir, "sdxl"))
    settings = runtime.settings.model_copy(update={"model_profile": "production", "sdxl_model": folder})
    production = GenerationRuntime(settings, storage=Storage(f"file://{tmp_path}"))
    try:
        request = request_for_job("sdxl_image_fast", "a boat", width=64, height=64, steps=2, seeds=[9])
        from_production = production.submit(request).result()
        assert np.array_equal(from_production, runtime.submit(request).result())
        assert [key.source for key in production.pipelines.loads] == [settings.sdxl_model]
    finally:
        production.close()


def test_noop_profile_makes_black_frames_with_real_progress(tiny_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The benchmark profile: no model, but sizes, frames, progress and cancellation as with one."""
    noop = GenerationRuntime(
        tiny_settings.model_copy(update={"model_profile": "noop"}), storage=Storage(f"file://{tmp_path}")
    )
    try:
        seen: list[int] = []
        request = request_for_job("sdxl_image_fast", "a boat", num_images=3, steps=5)
        pixels = noop.submit(request, Control(progress=lambda step, total: seen.append(step))).result()
        assert pixels.shape == (3, 1, 1024, 1024, 3) and not pixels.any() and seen == [1, 2, 3, 4, 5]
        video = noop.generate(request_for_job("video_fast", "a boat"), _place("video_fast"))
        assert [a.type for a in video.assets] == ["video", "thumbnail"] and video.assets[0].frames == 81
        cancel = threading.Event()
        cancel.set()
        with pytest.raises(Cancelled):
            noop.submit(request, Control(cancel=cancel)).result()
        assert [key.source for key in noop.pipelines.loads] == ["noop", "noop"]
    finally:
        noop.close()
