"""Reference images: where one may come from, whose it may be, and the seed system's two modes."""

from __future__ import annotations

import io
import uuid
from typing import Any

import pytest
from PIL import Image

from ourvidz.catalog import get_job_type
from ourvidz.jobs.errors import Forbidden, InvalidJob
from ourvidz.jobs.references import (
    Reference,
    check_access,
    check_public,
    img2img_of,
    load_reference,
    reference_of,
    reference_pixels,
)
from ourvidz.jobs.spec import check_job
from ourvidz.storage import Storage

SDXL, WAN = get_job_type("sdxl_image_fast"), get_job_type("video_fast")
USER = uuid.uuid4()


@pytest.mark.parametrize(
    ("value", "reference"),
    [
        (f"user-library/{USER}/ref.png", Reference(bucket="user-library", key=f"{USER}/ref.png")),
        (f"workspace-temp/{USER}/a/b.webp", Reference(bucket="workspace-temp", key=f"{USER}/a/b.webp")),
        (
            f"/files/sdxl_image_fast/{USER}/j/0.png",
            Reference(bucket="sdxl_image_fast", key=f"{USER}/j/0.png"),
        ),
        ("https://images.example/ref.png", Reference(url="https://images.example/ref.png")),
    ],
)
def test_the_forms_a_reference_takes(value: str, reference: Reference) -> None:
    assert reference_of(SDXL, {"reference_image_url": value}) == reference


@pytest.mark.parametrize(
    ("metadata", "code"),
    [
        ({"reference_image_url": "http://images.example/ref.png"}, "REFERENCE_URL_NOT_ALLOWED"),
        ({"reference_image_url": "../../etc/passwd"}, "INVALID_PARAMETERS"),
        ({"reference_image_url": "bucket-only"}, "INVALID_PARAMETERS"),
        ({"reference_image_url": 12}, "INVALID_PARAMETERS"),
        ({"start_reference_url": "u/a.png"}, "REFERENCE_NOT_SUPPORTED"),
    ],
)
def test_references_that_are_refused(metadata: dict[str, Any], code: str) -> None:
    with pytest.raises(InvalidJob) as refused:
        reference_of(SDXL, metadata)
    assert refused.value.code == code


def test_a_video_job_takes_a_first_frame_only_where_an_image_to_video_model_is_configured() -> None:
    start = f"user-library/{USER}/first.png"
    for metadata in ({"start_reference_url": start}, {"reference_image_url": start}):
        with pytest.raises(InvalidJob) as refused:
            reference_of(WAN, metadata)
        assert refused.value.code == "REFERENCE_NOT_SUPPORTED"
        assert reference_of(WAN, metadata, video_references=True) == Reference(
            "user-library", f"{USER}/first.png"
        )
    first = {"start_reference_url": start, "reference_image_url": f"user-library/{USER}/other.png"}
    assert reference_of(WAN, first, video_references=True) == Reference("user-library", f"{USER}/first.png")
    with pytest.raises(InvalidJob) as last:
        reference_of(WAN, {"start_reference_url": start, "end_reference_url": start}, video_references=True)
    assert (last.value.code, last.value.details) == (
        "REFERENCE_NOT_SUPPORTED",
        {"field": "end_reference_url"},
    )
    frame = check_job("video_fast", "a boat", {"start_reference_url": start}, video_references=True)
    assert (
        frame.img2img is not None and frame.img2img.mode == "first_frame" and frame.request.strength is None
    )
    with pytest.raises(InvalidJob) as wordless:
        check_job("video_fast", "", {"reference_image_url": start}, video_references=True)
    assert wordless.value.code == "MISSING_PROMPT"


def test_another_users_file_is_forbidden() -> None:
    check_access(Reference(bucket="user-library", key=f"{USER}/ref.png"), USER)
    with pytest.raises(Forbidden) as refused:
        check_access(Reference(bucket="user-library", key=f"{uuid.uuid4()}/ref.png"), USER)
    assert refused.value.code == "CROSS_USER_REFERENCE"


@pytest.mark.parametrize(
    "url",
    ["https://127.0.0.1/a.png", "https://localhost/a.png", "https://127.1/a.png", "https://2130706433/a.png",
     "https://0.0.0.0/a.png", "https://169.254.169.254/latest", "https://10.1.2.3/a.png", "https://[::1]/a.png",
     "https://192.168.0.1/a.png", "https://no-such-host.invalid/a.png"],
)  # fmt: skip
def test_urls_of_private_loopback_or_unresolvable_hosts_are_refused(url: str) -> None:
    with pytest.raises(InvalidJob) as refused:
        check_public(url)
    assert refused.value.code == "REFERENCE_URL_NOT_ALLOWED"


def test_the_seed_modes() -> None:
    reference = {"reference_image_url": f"user-library/{USER}/ref.png"}
    copy = img2img_of(SDXL, "", {**reference, "exact_copy_mode": True, "steps": 8, "guidance": 7.5})
    assert copy is not None
    assert (copy.mode, copy.denoise, copy.guidance, copy.steps, copy.negative_prompt) == (
        "copy",
        0.05,
        1.0,
        8,
        "",
    )
    clamped = img2img_of(SDXL, "", {**reference, "exact_copy_mode": True, "denoise_strength": 0.5})
    assert clamped is not None and clamped.denoise == 0.05
    modify = img2img_of(SDXL, "a red car", reference)
    assert modify is not None and (modify.mode, modify.denoise, modify.guidance, modify.steps) == (
        "modify", 0.2, 6.0, 20,
    )  # fmt: skip
    asked = img2img_of(SDXL, "", {**reference, "exact_copy_mode": True, "reference_mode": "modify",
                                  "reference_strength": 0.7})  # fmt: skip
    assert asked is not None and asked.mode == "modify" and asked.denoise == pytest.approx(0.3)
    kept = img2img_of(SDXL, "x", {**reference, "reference_strength": 1.0})
    assert kept is not None and kept.denoise == 0.01
    with pytest.raises(InvalidJob) as refused:
        img2img_of(SDXL, "x", {**reference, "denoise_strength": 2})
    assert refused.value.details == {"field": "denoise_strength"}


def test_a_promptless_job_needs_a_reference() -> None:
    reference = {"reference_image_url": f"user-library/{USER}/ref.png"}
    copy = check_job("sdxl_image_fast", "", {**reference, "exact_copy_mode": True}).request
    assert (copy.strength, copy.guidance, copy.prompt) == (0.05, 1.0, "")
    assert check_job("sdxl_image_fast", "", reference).request.strength == 0.2  # a modify without words
    for metadata in ({}, {"exact_copy_mode": True}):
        with pytest.raises(InvalidJob) as refused:
            check_job("sdxl_image_fast", "", metadata)
        assert refused.value.code == "MISSING_PROMPT"


def test_a_stored_reference_is_read_and_a_missing_one_named(tmp_path: Any) -> None:
    storage = Storage(f"file://{tmp_path}")
    buffer = io.BytesIO()
    Image.new("RGB", (32, 16), (10, 20, 30)).save(buffer, format="PNG")
    storage.put("user-library", f"{USER}/ref.png", buffer.getvalue())
    data = load_reference(storage, Reference(bucket="user-library", key=f"{USER}/ref.png"))
    assert reference_pixels(data, 16, 16).shape == (16, 16, 3)
    with pytest.raises(InvalidJob) as missing:
        load_reference(storage, Reference(bucket="user-library", key=f"{USER}/gone.png"))
    assert missing.value.code == "REFERENCE_NOT_FOUND"
    with pytest.raises(InvalidJob) as garbage:
        reference_pixels(b"not an image", 16, 16)
    assert garbage.value.code == "REFERENCE_NOT_FOUND"


def test_fetching_a_url_checks_its_address_again() -> None:
    with pytest.raises(InvalidJob) as refused:
        load_reference(Storage("memory://"), Reference(url="https://127.0.0.1:9/a.png"))
    assert refused.value.code == "REFERENCE_URL_NOT_ALLOWED"
