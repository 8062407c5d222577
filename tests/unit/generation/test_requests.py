"""Bad input is refused with a typed error before any model work."""

from __future__ import annotations

import math

import pytest

from ourvidz.generation.request import GenerationRequest, InvalidRequest, request_for_job
from ourvidz.generation.runtime import GenerationRuntime


def test_catalog_defaults_fill_the_request() -> None:
    video = request_for_job("video_fast", "a boat", seeds=[7])
    shape = (video.family, video.width, video.height, video.frames, video.steps, video.guidance, video.fps)
    assert shape == ("wan", 832, 480, 81, 25, 6.5, 16)
    image = request_for_job("sdxl_image_high", "a boat", num_images=6)
    assert (image.width, image.height, image.steps, image.guidance, image.frames) == (1024, 1024, 25, 7.5, 1)
    assert len(image.seeds) == 6 and len(set(image.seeds)) == 6
    assert request_for_job("wan_image_fast", "a boat").frames == 1


def test_overrides_within_bounds_win() -> None:
    request = request_for_job("video_high", "a boat", width=512, height=256, frames=17, steps=4, guidance=3.0)
    assert (request.width, request.height, request.frames, request.steps, request.guidance) == (
        512, 256, 17, 4, 3.0,
    )  # fmt: skip


BAD_REQUESTS = {
    "sdxl width not multiple of 8": ("sdxl_image_fast", {"width": 1020}, "width"),
    "wan height not multiple of 16": ("video_fast", {"height": 488}, "height"),
    "too small": ("sdxl_image_fast", {"height": 32}, "height"),
    "too large": ("image_fast", {"width": 4096}, "width"),
    "frames not 4k+1": ("video_fast", {"frames": 80}, "frames"),
    "too many frames": ("video_fast", {"frames": 401}, "frames"),
    "frames on an image job": ("image_fast", {"frames": 5}, "frames"),
    "zero steps": ("sdxl_image_fast", {"steps": 0}, "steps"),
    "too many steps": ("image_high", {"steps": 500}, "steps"),
    "negative guidance": ("sdxl_image_fast", {"guidance": -1.0}, "guidance"),
    "nan guidance": ("sdxl_image_fast", {"guidance": math.nan}, "guidance"),
    "2 sdxl images": ("sdxl_image_fast", {"num_images": 2}, "num_images"),
    "3 wan images": ("image_fast", {"num_images": 3}, "num_images"),
    "seed count mismatch": ("sdxl_image_fast", {"num_images": 3, "seeds": [1]}, "seeds"),
    "negative seed": ("sdxl_image_fast", {"seeds": [-1]}, "seeds"),
    "seed too big": ("sdxl_image_fast", {"seeds": [2**64]}, "seeds"),
    "unknown job type": ("sdxl_video", {}, "job_type"),
    "string steps": ("sdxl_image_fast", {"steps": "10"}, "steps"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_requests_are_refused(case: str) -> None:
    job_type, overrides, field = BAD_REQUESTS[case]
    with pytest.raises(InvalidRequest) as info:
        request_for_job(job_type, "a boat", **overrides)
    assert info.value.field == field


@pytest.mark.parametrize("prompt", ["", "   ", "x" * 10_001])
def test_bad_prompts_are_refused(prompt: str) -> None:
    with pytest.raises(InvalidRequest, match="prompt"):
        request_for_job("sdxl_image_fast", prompt)


def test_unknown_family_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="unknown model family 'flux'"):
        GenerationRequest(
            family="flux", prompt="a boat", width=512, height=512, steps=4, guidance=1.0, seeds=(1,)
        )


def test_refusals_do_no_model_work(fresh_runtime: GenerationRuntime) -> None:
    for job_type, overrides, _ in BAD_REQUESTS.values():
        with pytest.raises(InvalidRequest):
            fresh_runtime.submit(request_for_job(job_type, "a boat", **overrides))
    with pytest.raises(InvalidRequest):
        fresh_runtime.pipelines.key("flux")
    assert fresh_runtime.pipelines.total_loads == 0 and list(fresh_runtime.executor.batch_sizes) == []


def test_only_sdxl_requests_are_batchable() -> None:
    sdxl = request_for_job("sdxl_image_fast", "a boat", width=512, height=512)
    assert sdxl.batch_key == ("sdxl", 512, 512, 15, 6.0)
    assert request_for_job("sdxl_image_fast", "another", width=512, height=512).batch_key == sdxl.batch_key
    assert (
        request_for_job("sdxl_image_fast", "a boat", steps=14, width=512, height=512).batch_key
        != sdxl.batch_key
    )
    assert request_for_job("image_fast", "a boat").batch_key is None
