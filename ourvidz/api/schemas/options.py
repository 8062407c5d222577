"""Generation options as the seed system's frontend spells them, mapped onto a job's options.

A job's options are metadata keys (`ourvidz.jobs.spec`: `num_images`, `seed`, `negative_prompt`,
`width`, `height`, `steps`, `guidance`, `enhance`, ...). The frontend sends them at the top level of
`queue-job` (era B) or inside `metadata` (both eras), under its own names (`guidance_scale`,
`num_inference_steps`, `aspect_ratio`, ...). A top-level value wins over the same option in `metadata`,
except the reference image, where `metadata` wins (as the seed's queue-job has it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ourvidz.catalog import JobType

# The seed clamps any image count to the batch sizes its workers make: <=1 -> 1, <=3 -> 3, else 6.
BATCH_SIZES = (1, 3, 6)
ROUND_TO = {"sdxl": 64, "wan": 16}  # SDXL's training buckets; Wan's VAE cells times its patches
NEAR_OWN_RATIO = 0.03  # an aspect ratio this close to the job type's own keeps its own size
_RATIO = re.compile(r"^\s*(\d{1,3}(?:\.\d+)?)\s*:\s*(\d{1,3}(?:\.\d+)?)\s*$")
_SIZE = re.compile(r"^\s*(\d{1,5})\s*[x*]\s*(\d{1,5})\s*$", re.IGNORECASE)


class InvalidOption(ValueError):
    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


def first(*values: Any) -> Any:
    return next((value for value in values if value is not None), None)


def clamp_images(count: int) -> int:
    return next((size for size in BATCH_SIZES if count <= size), BATCH_SIZES[-1])


def job_options(job_type: JobType, top: Mapping[str, Any], metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The options a request asks for, from its top-level fields (`top`, None where not sent) and its
    metadata; only options that were given appear."""
    options: dict[str, Any] = {
        "seed": first(top.get("seed"), metadata.get("seed")),
        "steps": first(top.get("steps"), metadata.get("steps"), metadata.get("num_inference_steps")),
        "guidance": first(
            top.get("guidance_scale"), metadata.get("guidance_scale"), metadata.get("guidance")
        ),
        "negative_prompt": first(top.get("negative_prompt"), metadata.get("negative_prompt")),
        "enhanced_prompt": first(top.get("enhanced_prompt"), metadata.get("enhanced_prompt")) or None,
        "compel_enabled": first(top.get("compel_enabled"), metadata.get("compel_enabled")),
        "compel_weights": first(top.get("compel_weights"), metadata.get("compel_weights")),
        "reference_image_url": first(metadata.get("reference_image_url"), top.get("reference_image_url")),
        "reference_strength": first(top.get("reference_strength"), metadata.get("reference_strength")),
        "denoise_strength": first(top.get("denoise_strength"), metadata.get("denoise_strength")),
    }
    count = first(top.get("num_images"), metadata.get("num_images"))
    if count is not None:
        if not isinstance(count, int) or isinstance(count, bool):
            raise InvalidOption("num_images", f"must be an integer, got {count!r}")
        options["num_images"] = clamp_images(count) if job_type.output == "image" else 1
    options.update(_size(job_type, top, metadata))
    enhance = _enhance(top, metadata)
    if enhance is not None:
        options["enhance"] = enhance
    return {key: value for key, value in options.items() if value is not None}


def _enhance(top: Mapping[str, Any], metadata: Mapping[str, Any]) -> bool | None:
    """Whether the job's prompt is enhanced, as the seed decides it: asked for, not skipped, a model other
    than `none`, and no enhanced prompt sent along. None: the request does not say (the job type decides)."""
    if metadata.get("enhance") is not None:
        return bool(metadata["enhance"])
    if first(top.get("enhanced_prompt"), metadata.get("enhanced_prompt")):
        return False
    asked, skipped = metadata.get("user_requested_enhancement"), metadata.get("skip_enhancement")
    if asked is None and skipped is None:
        return None
    model = first(metadata.get("enhancement_model"), top.get("enhancement_model"))
    return bool(asked) and not skipped and model != "none"


def _size(job_type: JobType, top: Mapping[str, Any], metadata: Mapping[str, Any]) -> dict[str, int]:
    """`width`/`height` given as such, as a resolution (`1024x576`, `480*832`) or as an aspect ratio
    (`16:9`: the job type's longer side kept, the other rounded to the family's cell size)."""
    width, height = metadata.get("width"), metadata.get("height")
    if width is not None or height is not None:
        return {key: value for key, value in (("width", width), ("height", height)) if value is not None}
    resolution = first(top.get("resolution"), metadata.get("resolution"))
    if resolution is not None:
        match = _SIZE.match(resolution) if isinstance(resolution, str) else None
        if match is None:
            raise InvalidOption("resolution", f"must be WIDTHxHEIGHT such as 1024x576, got {resolution!r}")
        return {"width": int(match[1]), "height": int(match[2])}
    ratio = first(top.get("aspect_ratio"), metadata.get("aspect_ratio"))
    if ratio is None:
        return {}
    match = _RATIO.match(ratio) if isinstance(ratio, str) else None
    if match is None or not float(match[1]) or not float(match[2]):
        raise InvalidOption("aspect_ratio", f"must be W:H such as 16:9, got {ratio!r}")
    wanted, own = float(match[1]) / float(match[2]), job_type.width / job_type.height
    if abs(wanted / own - 1) <= NEAR_OWN_RATIO:
        return {"width": job_type.width, "height": job_type.height}
    if abs(wanted * own - 1) <= NEAR_OWN_RATIO:  # the job type's own size, turned
        return {"width": job_type.height, "height": job_type.width}
    long_side, cell = max(job_type.width, job_type.height), ROUND_TO[job_type.family]
    short_side = max(cell, round(long_side / max(wanted, 1 / wanted) / cell) * cell)
    return (
        {"width": long_side, "height": short_side}
        if wanted >= 1
        else {"width": short_side, "height": long_side}
    )
