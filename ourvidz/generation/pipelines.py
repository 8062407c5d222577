"""One pipeline call for one or more requests, with per-step progress and cancellation between steps.

Prompts are encoded per request and the embeddings concatenated, so a request gets the same pixels
whether it runs alone or inside a batch, and every image gets its own seeded generator.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline
from PIL import Image

from ourvidz.generation.control import Cancelled, Control
from ourvidz.generation.request import GenerationRequest

Embeddings = dict[str, torch.Tensor]
_IMG2IMG: weakref.WeakKeyDictionary[DiffusionPipeline, DiffusionPipeline] = weakref.WeakKeyDictionary()
Encoder = Callable[[DiffusionPipeline, GenerationRequest], Embeddings]
WAN_MAX_SEQUENCE_LENGTH = 512


def encode_sdxl(pipe: DiffusionPipeline, request: GenerationRequest) -> Embeddings:
    positive, negative, pooled, negative_pooled = pipe.encode_prompt(
        prompt=request.prompt,
        device=pipe._execution_device,
        num_images_per_prompt=request.num_images,
        do_classifier_free_guidance=True,
        negative_prompt=request.negative_prompt or None,  # None: SDXL's zeroed empty negative
    )
    return {
        "prompt_embeds": positive,
        "negative_prompt_embeds": negative,
        "pooled_prompt_embeds": pooled,
        "negative_pooled_prompt_embeds": negative_pooled,
    }


def encode_wan(pipe: DiffusionPipeline, request: GenerationRequest) -> Embeddings:
    positive, negative = pipe.encode_prompt(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        do_classifier_free_guidance=True,
        num_videos_per_prompt=1,
        max_sequence_length=WAN_MAX_SEQUENCE_LENGTH,
        device=pipe._execution_device,
    )
    return {"prompt_embeds": positive, "negative_prompt_embeds": negative}


DEFAULT_ENCODERS: dict[str, Encoder] = {"sdxl": encode_sdxl, "wan": encode_wan}


def run_pipeline(
    pipe: DiffusionPipeline,
    requests: Sequence[GenerationRequest],
    controls: Sequence[Control],
    encode: Encoder | None = None,
    between_steps: Callable[[], None] | None = None,
) -> list[np.ndarray | Cancelled]:
    """Run compatible `requests` as one call; per request, uint8 frames (images, frames, H, W, 3).

    A request cancelled while others in its batch go on gets a `Cancelled` in its place. When every
    request is cancelled the call stops at the next step boundary and `Cancelled` is raised.
    `between_steps` runs after each step's progress (the executor runs other work there).
    """
    first = requests[0]
    batchable = first.batch_key is not None and all(r.batch_key == first.batch_key for r in requests)
    if len(requests) > 1 and not batchable:
        raise ValueError("only requests with the same batch key can share a call")
    total = first.steps if first.strength is None else img2img_steps(first)[1]
    _raise_if_all_cancelled(controls)

    def on_step_end(_pipe: Any, step: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        _raise_if_all_cancelled(controls)
        for control in controls:
            if control.progress is not None and not control.cancelled:
                control.progress(step + 1, total)
        if between_steps is not None:
            between_steps()
        return tensors

    encode = encode or DEFAULT_ENCODERS[first.family]
    with torch.inference_mode():
        parts = [encode(pipe, request) for request in requests]
        embeddings = {name: torch.cat([part[name] for part in parts]) for name in parts[0]}
        generators = [torch.Generator("cpu").manual_seed(seed) for r in requests for seed in r.seeds]
        common = {
            "width": first.width,
            "height": first.height,
            "num_inference_steps": first.steps,
            "guidance_scale": first.guidance,
            "generator": generators,
            "output_type": "np",
            "callback_on_step_end": on_step_end,
        }
        if first.family == "wan" and first.reference is not None:
            frame_images = {"image": Image.fromarray(first.reference)}
            if first.last_reference is not None:
                frame_images["last_image"] = Image.fromarray(first.last_reference)
            frames = pipe(**embeddings, **common, num_frames=first.frames, **frame_images).frames
        elif first.family == "wan":
            frames = pipe(**embeddings, **common, num_frames=first.frames).frames
        elif first.reference is not None:
            frames = _img2img(pipe, first, embeddings, common).images[:, None]
        else:
            frames = pipe(**embeddings, **common).images[:, None]
    pixels = (np.clip(frames, 0.0, 1.0) * 255).round().astype(np.uint8)
    results: list[np.ndarray | Cancelled] = []
    start = 0
    for request, control in zip(requests, controls, strict=True):
        chunk = pixels[start : start + request.num_images]
        start += request.num_images
        results.append(Cancelled("cancelled") if control.cancelled else chunk)
    return results


def img2img_steps(request: GenerationRequest) -> tuple[int, int]:
    """The schedule's length and the steps actually denoised: `steps` over the whole schedule, of which
    the last `strength` share runs; lengthened so that at least one step runs (a 0.05 exact copy)."""
    assert request.strength is not None
    schedule = max(request.steps, math.ceil(1 / request.strength))
    return schedule, min(int(schedule * request.strength), schedule)


def _img2img(
    pipe: DiffusionPipeline, request: GenerationRequest, embeddings: Embeddings, common: dict[str, Any]
) -> Any:
    """SDXL image-to-image on the loaded pipeline's components (no second copy of the weights); the output
    takes the reference's size, which the worker made the request's."""
    if not isinstance(pipe, StableDiffusionXLPipeline):  # the noop profile: any call makes black frames
        return pipe(**embeddings, **common)
    img2img = _IMG2IMG.get(pipe)
    if img2img is None:
        img2img = _IMG2IMG[pipe] = StableDiffusionXLImg2ImgPipeline.from_pipe(pipe)
    assert request.reference is not None
    image = torch.tensor(request.reference).permute(2, 0, 1)[None].float() / 255.0
    options = {key: value for key, value in common.items() if key not in ("width", "height")}
    options["num_inference_steps"] = img2img_steps(request)[0]
    return img2img(**embeddings, **options, image=image, strength=request.strength)


def _raise_if_all_cancelled(controls: Sequence[Control]) -> None:
    if all(control.cancelled for control in controls):
        raise Cancelled("cancelled")
