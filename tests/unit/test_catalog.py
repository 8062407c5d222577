"""The job catalog: the spec's 10 job types, their routing and defaults, aliases, unknown types."""

from __future__ import annotations

import pytest

from ourvidz.catalog import JOB_TYPES, UnknownJobType, canonical_name, get_job_type

SPEC_TYPES = {
    # name: (queue, output, enhanced, steps, guidance)
    "sdxl_image_fast": ("sdxl", "image", False, 15, 6.0),
    "sdxl_image_high": ("sdxl", "image", False, 25, 7.5),
    "image_fast": ("wan", "image", False, 25, 6.5),
    "image_high": ("wan", "image", False, 50, 7.5),
    "video_fast": ("wan", "video", False, 25, 6.5),
    "video_high": ("wan", "video", False, 50, 7.5),
    "image7b_fast_enhanced": ("wan", "image", True, 25, 6.5),
    "image7b_high_enhanced": ("wan", "image", True, 50, 7.5),
    "video7b_fast_enhanced": ("wan", "video", True, 25, 6.5),
    "video7b_high_enhanced": ("wan", "video", True, 50, 7.5),
}


def test_catalog_has_exactly_the_spec_types() -> None:
    assert set(JOB_TYPES) == set(SPEC_TYPES)


@pytest.mark.parametrize("name", sorted(SPEC_TYPES))
def test_job_type_routing_and_defaults(name: str) -> None:
    job = get_job_type(name)
    queue, output, enhanced, steps, guidance = SPEC_TYPES[name]
    assert (job.queue, job.family, job.output, job.enhanced) == (queue, queue, output, enhanced)
    assert (job.steps, job.guidance) == (steps, guidance)
    assert job.quality == ("high" if "high" in name else "fast")
    assert job.expected_seconds > 0 and job.credits > 0 and job.max_prompt_chars > 0
    if job.family == "sdxl":
        assert (job.width, job.height, job.frames, job.num_images_allowed) == (1024, 1024, None, (1, 3, 6))
        assert job.token_budget == 75
    else:
        assert (job.width, job.height, job.num_images_allowed) == (832, 480, (1,))
        assert job.token_budget == (250 if job.quality == "high" else 175)
    if output == "video":
        assert job.frames == 81 and (job.frames - 1) % 4 == 0 and job.fps == 16
        assert job.file_extension == "mp4"
    else:
        assert job.file_extension == "png"
        assert job.frames in (None, 1)


def test_spec_expected_times() -> None:
    assert {name: job.expected_seconds for name, job in JOB_TYPES.items()} == {
        "sdxl_image_fast": 8, "sdxl_image_high": 15, "image_fast": 73, "image_high": 90,
        "video_fast": 180, "video_high": 280, "image7b_fast_enhanced": 87, "image7b_high_enhanced": 104,
        "video7b_fast_enhanced": 194, "video7b_high_enhanced": 294,
    }  # fmt: skip


def test_enhanced_types_cost_more_than_their_plain_twin() -> None:
    for name, job in JOB_TYPES.items():
        if job.enhanced:
            plain = name.replace("7b", "").replace("_enhanced", "")
            assert job.credits > JOB_TYPES[plain].credits
            assert job.model_variant != JOB_TYPES[plain].model_variant


def test_credits_scale_with_number_of_images() -> None:
    job = get_job_type("sdxl_image_high")
    assert job.credits_for(6) == 6 * job.credits_for(1)


@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        ("wan_video_fast", "video_fast"),
        ("wan_video_high", "video_high"),
        ("wan_image_fast", "image_fast"),
        ("wan_image7b_high_enhanced", "image7b_high_enhanced"),
        ("SDXL_IMAGE_FAST", "sdxl_image_fast"),
        ("video-fast", "video_fast"),
        ("  image_high ", "image_high"),
    ],
)
def test_aliases(alias: str, expected: str) -> None:
    assert canonical_name(alias) == expected
    assert get_job_type(alias) is JOB_TYPES[expected]


@pytest.mark.parametrize(
    "bad", ["sdxl_video_fast", "wan_sdxl_image_fast", "", "video", None, 7, ["video_fast"]]
)
def test_unknown_type_lists_the_valid_ones(bad: object) -> None:
    with pytest.raises(UnknownJobType) as info:
        get_job_type(bad)
    assert info.value.valid == sorted(SPEC_TYPES)
    assert "valid job types: image7b_fast_enhanced, image7b_high_enhanced" in str(info.value)
