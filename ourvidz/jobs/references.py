"""Reference images of image-to-image jobs: where one may come from, and the seed's two modes.

A reference (`reference_image_url`) is a file in our storage owned by the caller, written
`<bucket>/<key>` (the seed's `user-library/<user id>/...` and `workspace-temp/<user id>/...`, or the
gateway's own `/files/<bucket>/<key>` download path), whose key starts with the caller's id (another
user's is 403 CROSS_USER_REFERENCE, as the seed answers); or an http(s) URL the egress policy allows
(`ourvidz.egress`: public addresses, or what the operator allowlists; else 400
REFERENCE_URL_NOT_ALLOWED), fetched by the GPU worker through that policy with size, type and time
limits and no redirects.

Modes, as the seed's queue-job decides them: an **exact copy** (`exact_copy_mode`, no prompt, no
`originalEnhancedPrompt`) denoises at most 0.05 with CFG 1.0, 15 steps and no negative prompt; a
**modify** (any other reference job) defaults to denoise 0.20, CFG 6.0, 20 steps. The denoise is
`denoise_strength`, else `1 - reference_strength`. A Wan job takes a first frame (`start_reference_url`, else
`reference_image_url`) where a Wan image-to-video model is configured (`wan_i2v_model`), and a first
and a last frame (`end_reference_url`) where a first-last-frame model is (`wan_flf2v_model`); it is
refused with REFERENCE_NOT_SUPPORTED otherwise.
"""

from __future__ import annotations

import io
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import numpy as np
from PIL import Image

from ourvidz.catalog import JobType
from ourvidz.config import Settings
from ourvidz.egress import EgressPolicy, EgressRefused, UrlNotAllowed, policies
from ourvidz.generation.request import GenerationRequest
from ourvidz.jobs.errors import Forbidden, InvalidJob
from ourvidz.storage import InvalidStorageKey, Storage, validate_bucket, validate_key

VIDEO_REFERENCE_KEYS = ("start_reference_url", "end_reference_url")
EXACT_COPY = {"denoise": 0.05, "guidance": 1.0, "steps": 15}
MODIFY = {"denoise": 0.20, "guidance": 6.0, "steps": 20}
MIN_DENOISE = 0.01  # a reference kept entirely (`reference_strength: 1`) still runs one step
MAX_REFERENCE_BYTES = 20 * 1024 * 1024
MAX_REFERENCE_PIXELS = 40_000_000
FETCH_TIMEOUT_SECONDS = 10.0
DOWNLOAD_PREFIX = "/files/"


@dataclass(frozen=True, slots=True)
class Reference:
    """Where a reference image is: a stored file (`bucket`, `key`) or a public https `url`."""

    bucket: str | None = None
    key: str | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class ReferenceRules:
    """What this process allows of what a job names outside itself: the Wan image-to-video models it
    runs, first frame (`wan_i2v_model`) and first and last frames (`wan_flf2v_model`), and where URLs
    chosen by users (reference images, the job's webhook) may point (`egress`)."""

    first_frame: bool = False
    first_and_last: bool = False
    egress: EgressPolicy = field(default_factory=EgressPolicy)

    @classmethod
    def of(cls, settings: Settings, egress: EgressPolicy | None = None) -> ReferenceRules:
        """The rules of `settings` (`egress`: its user-URL policy, when the caller has it already)."""
        egress = egress or policies(settings)[0]
        return cls(bool(settings.wan_i2v_model), bool(settings.wan_flf2v_model), egress)


NO_RULES = ReferenceRules()


@dataclass(frozen=True, slots=True)
class Img2Img:
    """A reference job's settings once its mode is applied."""

    reference: Reference
    mode: str  # "copy" or "modify" (SDXL), "first_frame" or "first_last_frame" (Wan)
    denoise: float | None  # None (Wan): the whole schedule runs; the others None: the job's own
    guidance: float | None
    steps: int | None
    negative_prompt: str | None
    last: Reference | None = None  # a Wan job's last frame


def references_of(
    job_type: JobType, metadata: dict[str, Any], rules: ReferenceRules = NO_RULES
) -> tuple[Reference | None, Reference | None]:
    """The job's reference image (a Wan job's first frame) and a Wan job's last frame, checked for form,
    not for owner or address."""
    if job_type.family == "wan":
        return _frames(job_type, metadata, rules)
    if named := [key for key in VIDEO_REFERENCE_KEYS if metadata.get(key)]:
        raise InvalidJob(
            "start and end frames are for Wan jobs",
            code="REFERENCE_NOT_SUPPORTED",
            details={"field": named[0]},
        )
    return _parsed(metadata.get("reference_image_url"), "reference_image_url"), None


def _frames(
    job_type: JobType, metadata: dict[str, Any], models: ReferenceRules
) -> tuple[Reference | None, Reference | None]:
    """A Wan job's first frame (`start_reference_url`, else `reference_image_url`: the seed worker's
    order) and last frame (`end_reference_url`), each needing the model that takes it."""
    field = "start_reference_url" if metadata.get("start_reference_url") else "reference_image_url"
    first, last = (
        _parsed(metadata.get(field), field),
        _parsed(metadata.get("end_reference_url"), "end_reference_url"),
    )
    if last is not None and first is None:
        raise InvalidJob("an end frame needs a start frame", details={"field": "end_reference_url"})
    needed, name = (
        (models.first_and_last, "first-last-frame") if last else (models.first_frame, "image-to-video")
    )
    if first is not None and not needed:
        raise InvalidJob(
            f"{job_type.name} takes no reference frames here: no Wan {name} model is configured",
            code="REFERENCE_NOT_SUPPORTED", details={"field": "end_reference_url" if last else field},
        )  # fmt: skip
    return first, last


def _parsed(value: Any, field: str) -> Reference | None:
    if not value:
        return None
    details = {"field": field}
    if not isinstance(value, str) or len(value) > 2048:
        raise InvalidJob(f"{field} must be a string of at most 2048 characters", details=details)
    if value.lower().startswith(("http://", "https://")):
        return Reference(url=value)  # its scheme and address are checked with the process's rules
    bucket, _, key = value.removeprefix(DOWNLOAD_PREFIX).partition("/")
    try:
        return Reference(bucket=validate_bucket(bucket), key=validate_key(key))
    except (ValueError, InvalidStorageKey):
        raise InvalidJob(
            f"{field} must be <bucket>/<key> of a stored file or an https URL", details=details
        ) from None


_FIELD = {"field": "reference_image_url"}


def img2img_of(
    job_type: JobType, prompt: str, metadata: dict[str, Any], rules: ReferenceRules = NO_RULES
) -> Img2Img | None:
    """The job's reference settings: for SDXL, the mode's defaults under what the job asks for; a Wan
    job's frames change nothing else."""
    reference, last = references_of(job_type, metadata, rules)
    if reference is None:
        return None
    if job_type.family == "wan":
        mode = "first_frame" if last is None else "first_last_frame"
        return Img2Img(reference, mode, None, None, None, None, last)
    exact = (
        bool(metadata.get("exact_copy_mode")) and not prompt and not metadata.get("originalEnhancedPrompt")
        and metadata.get("reference_mode") != "modify"
    )  # fmt: skip
    defaults = EXACT_COPY if exact else MODIFY
    denoise = _denoise(metadata, defaults["denoise"])
    if exact:
        return Img2Img(reference, "copy", min(denoise, EXACT_COPY["denoise"]), EXACT_COPY["guidance"],
                       _given(metadata, "steps", defaults["steps"]), "")  # fmt: skip
    return Img2Img(reference, "modify", denoise, _given(metadata, "guidance", defaults["guidance"]),
                   _given(metadata, "steps", defaults["steps"]), None)  # fmt: skip


def _denoise(metadata: dict[str, Any], default: float) -> float:
    field, denoise = "denoise_strength", metadata.get("denoise_strength")
    if denoise is None and metadata.get("reference_strength") is not None:
        field, strength = "reference_strength", metadata["reference_strength"]
        denoise = 1 - strength if _fraction(strength) else strength
    if denoise is None:
        return default
    if not _fraction(denoise):
        raise InvalidJob(f"{field} must be a number from 0 to 1", details={"field": field})
    return max(MIN_DENOISE, float(denoise))


def _fraction(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1


def _given(metadata: dict[str, Any], key: str, default: Any) -> Any:
    return default if metadata.get(key) is None else metadata[key]


def check_access(img2img: Img2Img, user_id: uuid.UUID, rules: ReferenceRules = NO_RULES) -> None:
    """Stored references must be the caller's; URLs must be ones the egress policy allows."""
    for reference in (img2img.reference, img2img.last):
        if reference is not None:
            _check_access(reference, user_id, rules)


def _check_access(reference: Reference, user_id: uuid.UUID, rules: ReferenceRules) -> None:
    if reference.url is not None:
        check_url(reference.url, rules)
    elif reference.key is not None and reference.key.split("/", 1)[0] != str(user_id):
        raise Forbidden(
            "the reference image belongs to another user", code="CROSS_USER_REFERENCE", details=_FIELD
        )


def check_url(url: str, rules: ReferenceRules = NO_RULES) -> None:
    """Refuse a reference URL the egress policy does not allow (400 REFERENCE_URL_NOT_ALLOWED)."""
    try:
        rules.egress.check(url)
    except UrlNotAllowed as exc:
        raise InvalidJob(
            f"reference_image_url is not allowed: {exc}", code="REFERENCE_URL_NOT_ALLOWED", details=_FIELD
        ) from None


def load_reference(storage: Storage, reference: Reference, rules: ReferenceRules = NO_RULES) -> bytes:
    """The reference file's bytes (raises InvalidJob REFERENCE_NOT_FOUND when it cannot be had)."""
    if reference.url is not None:
        return _fetch(reference.url, rules)
    assert reference.bucket is not None and reference.key is not None
    if not storage.exists(reference.bucket, reference.key):
        raise InvalidJob("the reference image is not in storage", code="REFERENCE_NOT_FOUND", details=_FIELD)
    if storage.size(reference.bucket, reference.key) > MAX_REFERENCE_BYTES:
        raise InvalidJob(
            f"the reference image is over {MAX_REFERENCE_BYTES} bytes", code="REFERENCE_TOO_LARGE"
        )
    return storage.get(reference.bucket, reference.key)


def _fetch(url: str, rules: ReferenceRules) -> bytes:
    """GET through the egress policy, which resolves the host again and connects to the address it
    checked (the name may resolve elsewhere now than when the job was accepted)."""
    try:
        with (
            rules.egress.client(timeout=FETCH_TIMEOUT_SECONDS) as client,
            client.stream("GET", url) as answer,
        ):
            if answer.status_code != 200:
                raise InvalidJob(
                    f"the reference URL answered {answer.status_code}", code="REFERENCE_NOT_FOUND"
                )
            if not answer.headers.get("content-type", "").startswith("image/"):
                raise InvalidJob("the reference URL is not an image", code="REFERENCE_NOT_FOUND")
            data, deadline = bytearray(), time.monotonic() + FETCH_TIMEOUT_SECONDS
            for chunk in answer.iter_bytes():
                data += chunk
                if time.monotonic() > deadline:  # the timeout bounds each read; this, the whole body
                    raise InvalidJob(
                        f"the reference URL took over {FETCH_TIMEOUT_SECONDS:.0f} s",
                        code="REFERENCE_NOT_FOUND",
                    )
                if len(data) > MAX_REFERENCE_BYTES:
                    raise InvalidJob(
                        f"the reference image is over {MAX_REFERENCE_BYTES} bytes", code="REFERENCE_TOO_LARGE"
                    )
            return bytes(data)
    except EgressRefused as exc:
        raise InvalidJob(str(exc), code="REFERENCE_URL_NOT_ALLOWED", details=_FIELD) from None
    except httpx.HTTPError as exc:
        raise InvalidJob(f"the reference URL cannot be fetched: {exc}", code="REFERENCE_NOT_FOUND") from None


def reference_pixels(data: bytes, width: int, height: int) -> np.ndarray:
    """The reference as RGB uint8 (height, width, 3): scaled to cover the output size, then centre-cropped
    (the seed worker's `center_crop` policy)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_REFERENCE_PIXELS:
                raise InvalidJob(
                    f"the reference image is over {MAX_REFERENCE_PIXELS} pixels", code="REFERENCE_TOO_LARGE"
                )
            rgb = image.convert("RGB")
    except (OSError, Image.DecompressionBombError):
        raise InvalidJob(
            "the reference file is not an image this worker can read", code="REFERENCE_NOT_FOUND"
        ) from None
    scale = max(width / rgb.width, height / rgb.height)
    size = (max(width, round(rgb.width * scale)), max(height, round(rgb.height * scale)))
    rgb = rgb.resize(size, Image.Resampling.LANCZOS)
    left, top = (rgb.width - width) // 2, (rgb.height - height) // 2
    return np.asarray(rgb.crop((left, top, left + width, top + height)), dtype=np.uint8)


def with_references(
    storage: Storage, request: GenerationRequest, img2img: Img2Img | None, rules: ReferenceRules = NO_RULES
) -> GenerationRequest:
    """The request with its reference images' pixels, read from storage or fetched (a worker's step)."""
    if img2img is None:
        return request
    size = (request.width, request.height)
    first = reference_pixels(load_reference(storage, img2img.reference, rules), *size)
    last = (
        None
        if img2img.last is None
        else reference_pixels(load_reference(storage, img2img.last, rules), *size)
    )
    return replace(request, reference=first, last_reference=last)
