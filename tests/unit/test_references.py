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
    MAX_REFERENCE_BYTES,
    Reference,
    ReferenceRules,
    check_access,
    check_url,
    img2img_of,
    load_reference,
    reference_pixels,
    references_of,
)
from ourvidz.jobs.spec import check_job
from ourvidz.storage import Storage
from tests.peers import PEERS_ALLOWED, FileHost

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
    assert references_of(SDXL, {"reference_image_url": value}) == (reference, None)


@pytest.mark.parametrize(
    ("metadata", "code"),
    [
        ({"reference_image_url": "../../etc/passwd"}, "INVALID_PARAMETERS"),
        ({"reference_image_url": "bucket-only"}, "INVALID_PARAMETERS"),
        ({"reference_image_url": 12}, "INVALID_PARAMETERS"),
        ({"start_reference_url": "u/a.png"}, "REFERENCE_NOT_SUPPORTED"),
    ],
)
def test_references_that_are_refused(metadata: dict[str, Any], code: str) -> None:
    with pytest.raises(InvalidJob) as refused:
        references_of(SDXL, metadata)
    assert refused.value.code == code


FIRST_ONLY, BOTH = ReferenceRules(first_frame=True), ReferenceRules(first_frame=True, first_and_last=True)


def test_a_video_job_takes_frames_only_where_a_model_for_them_is_configured() -> None:
    start, end = f"user-library/{USER}/first.png", f"user-library/{USER}/last.png"
    first, last = (
        Reference("user-library", f"{USER}/first.png"),
        Reference("user-library", f"{USER}/last.png"),
    )
    for metadata in ({"start_reference_url": start}, {"reference_image_url": start}):
        with pytest.raises(InvalidJob) as refused:
            references_of(WAN, metadata)
        assert refused.value.code == "REFERENCE_NOT_SUPPORTED"
        assert references_of(WAN, metadata, FIRST_ONLY) == (first, None)
    preferred = {"start_reference_url": start, "reference_image_url": f"user-library/{USER}/other.png"}
    assert references_of(WAN, preferred, FIRST_ONLY) == (first, None)
    both = {"start_reference_url": start, "end_reference_url": end}
    with pytest.raises(InvalidJob) as no_model:
        references_of(WAN, both, FIRST_ONLY)
    assert (no_model.value.code, no_model.value.details) == (
        "REFERENCE_NOT_SUPPORTED",
        {"field": "end_reference_url"},
    )
    assert references_of(WAN, both, BOTH) == (first, last)
    with pytest.raises(InvalidJob) as alone:
        references_of(WAN, {"end_reference_url": end}, BOTH)
    assert (alone.value.code, alone.value.details) == ("INVALID_PARAMETERS", {"field": "end_reference_url"})
    frames = check_job("video_fast", "a boat", both, rules=BOTH)
    assert (
        frames.img2img is not None
        and frames.img2img.mode == "first_last_frame"
        and frames.img2img.last == last
    )
    assert frames.request.strength is None
    with pytest.raises(InvalidJob) as wordless:
        check_job("video_fast", "", {"reference_image_url": start}, rules=FIRST_ONLY)
    assert wordless.value.code == "MISSING_PROMPT"


def test_another_users_file_is_forbidden_first_or_last() -> None:
    mine, theirs = f"user-library/{USER}/a.png", f"user-library/{uuid.uuid4()}/a.png"
    check_access(check_job("sdxl_image_fast", "x", {"reference_image_url": mine}).img2img, USER)  # type: ignore[arg-type]
    for metadata in (
        {"start_reference_url": theirs},
        {"start_reference_url": mine, "end_reference_url": theirs},
    ):
        checked = check_job("video_fast", "x", metadata, rules=BOTH)
        assert checked.img2img is not None
        with pytest.raises(Forbidden) as refused:
            check_access(checked.img2img, USER)
        assert refused.value.code == "CROSS_USER_REFERENCE"


@pytest.mark.parametrize(
    "url",
    ["https://127.0.0.1/a.png", "https://localhost/a.png", "https://127.1/a.png", "https://2130706433/a.png",
     "https://0.0.0.0/a.png", "https://169.254.169.254/latest", "https://10.1.2.3/a.png", "https://[::1]/a.png",
     "https://192.168.0.1/a.png", "https://no-such-host.invalid/a.png"],
)  # fmt: skip
def test_urls_of_private_loopback_or_unresolvable_hosts_are_refused(url: str) -> None:
    with pytest.raises(InvalidJob) as refused:
        check_url(url)
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


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (1, 2, 3)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_url_is_fetched_within_its_limits_from_a_host_the_operator_allowlists() -> None:
    host = FileHost()
    trusted = ReferenceRules(egress=PEERS_ALLOWED)
    host.files |= {
        "/ref.png": (200, "image/png", _png(), {}),
        "/page": (200, "text/html", b"<html></html>", {}),
        "/moved": (302, "text/plain", b"", {"location": "/ref.png"}),
        "/big": (200, "image/png", b"\0" * (MAX_REFERENCE_BYTES + 1), {}),
    }
    try:
        with pytest.raises(InvalidJob) as untrusted:
            check_url(f"{host.url}/ref.png")  # http, and loopback
        assert untrusted.value.code == "REFERENCE_URL_NOT_ALLOWED"
        fetched = load_reference(Storage("memory://"), Reference(url=f"{host.url}/ref.png"), trusted)
        assert reference_pixels(fetched, 20, 20).shape == (20, 20, 3)
        for path, code in (("/page", "REFERENCE_NOT_FOUND"), ("/moved", "REFERENCE_NOT_FOUND"),
                           ("/gone", "REFERENCE_NOT_FOUND"), ("/big", "REFERENCE_TOO_LARGE")):  # fmt: skip
            with pytest.raises(InvalidJob) as refused:
                load_reference(Storage("memory://"), Reference(url=f"{host.url}{path}"), trusted)
            assert refused.value.code == code, path
    finally:
        host.close()
