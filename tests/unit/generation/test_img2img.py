"""SDXL image-to-image on the tiny pipeline: the reference shapes the output, the weights are shared,
the two modes of the seed system, progress over the steps actually run."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
from PIL import Image

from ourvidz.generation.control import Control
from ourvidz.generation.pipelines import img2img_steps
from ourvidz.generation.request import GenerationRequest, request_for_job
from ourvidz.generation.runtime import GenerationRuntime
from ourvidz.jobs.references import reference_pixels
from tests.unit.generation.helpers import same_image

SIZE = {"width": 128, "height": 96, "seeds": [7]}


def _reference(colour: tuple[int, int, int], size: tuple[int, int] = (200, 100)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _request(prompt: str, reference: bytes, strength: float, **overrides: object) -> GenerationRequest:
    request = request_for_job(
        "sdxl_image_fast", prompt, strength=strength, **{**SIZE, "steps": 4, **overrides}
    )
    return replace(request, reference=reference_pixels(reference, request.width, request.height))


def test_the_reference_is_scaled_to_cover_and_centre_cropped() -> None:
    buffer = io.BytesIO()
    image = Image.new("RGB", (300, 100), (0, 0, 255))
    image.paste((255, 0, 0), (100, 0, 200, 100))  # a red middle third
    image.save(buffer, format="PNG")
    pixels = reference_pixels(buffer.getvalue(), 96, 96)
    assert pixels.shape == (96, 96, 3) and tuple(pixels[48, 48]) == (255, 0, 0)


def test_the_reference_shapes_the_output_and_shares_the_loaded_weights(runtime: GenerationRuntime) -> None:
    loads = runtime.pipelines.total_loads
    text = runtime.submit(request_for_job("sdxl_image_fast", "a lighthouse", steps=4, **SIZE)).result()
    red = runtime.submit(_request("a lighthouse", _reference((255, 0, 0)), 0.5)).result()
    blue = runtime.submit(_request("a lighthouse", _reference((0, 0, 255)), 0.5)).result()
    again = runtime.submit(_request("a lighthouse", _reference((255, 0, 0)), 0.5)).result()
    assert red.shape == text.shape == (1, 1, 96, 128, 3)
    assert same_image(red, again) and not same_image(red, blue) and not same_image(red, text)
    assert runtime.pipelines.total_loads - loads <= 1  # the SDXL pipeline once at most; img2img shares it


def test_an_exact_copy_runs_without_a_prompt_and_at_least_one_step(runtime: GenerationRuntime) -> None:
    steps: list[tuple[int, int]] = []
    copy = _request("", _reference((0, 255, 0)), 0.05, guidance=1.0, steps=15)
    assert img2img_steps(copy) == (20, 1)
    pixels = runtime.submit(copy, Control(progress=lambda done, total: steps.append((done, total)))).result()
    assert pixels.shape == (1, 1, 96, 128, 3) and steps == [(1, 1)]


def test_several_images_from_one_reference_follow_their_seeds(runtime: GenerationRuntime) -> None:
    request = _request("a harbour", _reference((200, 120, 40)), 0.6, num_images=3, seeds=[1, 2, 3])
    assert request.batch_key is None  # image-to-image is never batched with other requests
    pixels = runtime.submit(request).result()
    assert pixels.shape == (3, 1, 96, 128, 3) and not np.array_equal(pixels[0], pixels[1])


def test_wan_videos_start_from_a_first_frame_and_end_on_a_last_one(runtime: GenerationRuntime) -> None:
    def video(first: tuple[int, int, int], last: tuple[int, int, int] | None = None) -> np.ndarray:
        request = request_for_job("video_fast", "a boat", width=96, height=64, frames=9, steps=2, seeds=[3])
        framed = replace(
            request, reference=reference_pixels(_reference(first), 96, 64),
            last_reference=None if last is None else reference_pixels(_reference(last), 96, 64),
        )  # fmt: skip
        assert framed.pipeline == ("wan_i2v" if last is None else "wan_flf2v") and request.pipeline == "wan"
        return runtime.submit(framed).result()

    red, blue, red_to_blue = video((255, 0, 0)), video((0, 0, 255)), video((255, 0, 0), (0, 0, 255))
    assert red.shape == red_to_blue.shape == (1, 9, 64, 96, 3)
    assert not same_image(red, blue) and not same_image(red, red_to_blue)
    assert {"wan_i2v", "wan_flf2v"} <= {key.family for key in runtime.pipelines.loads}
