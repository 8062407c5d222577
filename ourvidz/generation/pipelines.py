"""One pipeline call for one or more requests, with per-step progress and cancellation between steps.

Prompts are encoded per request and the embeddings concatenated, so a request gets the same pixels
whether it runs alone or inside a batch, and every image gets its own seeded generator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline

from ourvidz.generation.control import Cancelled, Control
from ourvidz.generation.request import GenerationRequest

Embeddings = dict[str, torch.Tensor]
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
) -> list[np.ndarray | Cancelled]:
    """Run compatible `requests` as one call; per request, uint8 frames (images, frames, H, W, 3).

    A request cancelled while others in its batch go on gets a `Cancelled` in its place. When every
    request is cancelled the call stops at the next step boundary and `Cancelled` is raised.
    """
    first = requests[0]
    batchable = first.batch_key is not None and all(r.batch_key == first.batch_key for r in requests)
    if len(requests) > 1 and not batchable:
        raise ValueError("only requests with the same batch key can share a call")
    total = first.steps
    _raise_if_all_cancelled(controls)

    def on_step_end(_pipe: Any, step: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        _raise_if_all_cancelled(controls)
        for control in controls:
            if control.progress is not None and not control.cancelled:
                control.progress(step + 1, total)
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
        if first.family == "wan":
            frames = pipe(**embeddings, **common, num_frames=first.frames).frames
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


def _raise_if_all_cancelled(controls: Sequence[Control]) -> None:
    if all(control.cancelled for control in controls):
        raise Cancelled("cancelled")
