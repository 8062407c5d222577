"""The seed frontend's generation options mapped onto a job's options (no services needed)."""

from __future__ import annotations

from typing import Any

import pytest

from ourvidz.api.schemas.options import InvalidOption, clamp_images, job_options
from ourvidz.catalog import get_job_type

SDXL, WAN_VIDEO = get_job_type("sdxl_image_fast"), get_job_type("video_fast")


def _options(
    job_type: str = "sdxl_image_fast", top: dict[str, Any] | None = None, **metadata: Any
) -> dict[str, Any]:
    return job_options(get_job_type(job_type), top or {}, metadata)


@pytest.mark.parametrize(
    ("given", "made"), [(-1, 1), (0, 1), (1, 1), (2, 3), (3, 3), (4, 6), (6, 6), (50, 6)]
)
def test_image_counts_clamp_to_the_seed_batch_sizes(given: int, made: int) -> None:
    assert clamp_images(given) == made
    assert _options(top={"num_images": given})["num_images"] == made


def test_a_video_makes_one_output_whatever_it_asks() -> None:
    assert _options("video_fast", top={"num_images": 6})["num_images"] == 1


@pytest.mark.parametrize(
    ("job_type", "ratio", "size"),
    [
        ("sdxl_image_fast", "1:1", (1024, 1024)),
        ("sdxl_image_fast", "16:9", (1024, 576)),
        ("sdxl_image_fast", "9:16", (576, 1024)),
        ("sdxl_image_fast", "4:3", (1024, 768)),
        ("sdxl_image_fast", "3:2", (1024, 704)),
        ("video_fast", "16:9", (832, 480)),
        ("video_fast", "9:16", (480, 832)),
        ("video_fast", "1:1", (832, 832)),
    ],
)
def test_aspect_ratios_keep_the_longer_side_and_the_family_cells(
    job_type: str, ratio: str, size: tuple[int, int]
) -> None:
    options = _options(job_type, aspect_ratio=ratio)
    assert (options["width"], options["height"]) == size


def test_a_resolution_or_explicit_size_wins_over_the_ratio() -> None:
    assert _options(resolution="1024x576", aspect_ratio="1:1")["width"] == 1024
    assert _options(resolution="480*832")["height"] == 832
    assert _options(width=512, aspect_ratio="16:9") == {"width": 512}


UNREADABLE = [("aspect_ratio", "wide"), ("aspect_ratio", "0:9"), ("resolution", "big"), ("resolution", 1024)]


@pytest.mark.parametrize(("field", "value"), UNREADABLE)
def test_unreadable_sizes_name_their_field(field: str, value: Any) -> None:
    with pytest.raises(InvalidOption) as refused:
        _options(**{field: value})
    assert refused.value.field == field


def test_top_level_options_win_and_metadata_spellings_are_read() -> None:
    options = _options(
        top={"steps": 30, "guidance_scale": 5.0}, num_inference_steps=20, guidance_scale=9.0, seed=7
    )
    assert (options["steps"], options["guidance"], options["seed"]) == (30, 5.0, 7)
    assert _options(num_inference_steps=20)["steps"] == 20


def test_the_reference_image_in_metadata_wins_as_the_seed_has_it() -> None:
    options = _options(top={"reference_image_url": "top.png"}, reference_image_url="meta.png")
    assert options["reference_image_url"] == "meta.png"


@pytest.mark.parametrize(
    ("top", "metadata", "enhance"),
    [
        ({}, {}, None),
        ({}, {"user_requested_enhancement": True}, True),
        ({}, {"user_requested_enhancement": True, "skip_enhancement": True}, False),
        ({}, {"user_requested_enhancement": True, "enhancement_model": "none"}, False),
        ({"enhanced_prompt": "done already"}, {"user_requested_enhancement": True}, False),
        ({}, {"enhance": True, "skip_enhancement": True}, True),
    ],
)
def test_enhancement_is_decided_as_the_seed_decides_it(
    top: dict[str, Any], metadata: dict[str, Any], enhance: bool | None
) -> None:
    assert _options(top=top, **metadata).get("enhance") == enhance


def test_options_not_given_stay_out() -> None:
    assert _options() == {}
