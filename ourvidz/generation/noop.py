"""The `noop` model profile: a stand-in pipeline that returns black frames at once.

For measuring everything around generation (dispatch, flow stages, storage, the gateway under load)
without any model cost. It honours the pipeline interface the runtime uses: prompt encoding, one
step callback per denoising step (so progress and cancellation behave as with a model), and output
of the requested size, frames and batch. Never a production setting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class NoopOutput:
    images: np.ndarray | None = None
    frames: np.ndarray | None = None


class NoopPipeline:
    def __init__(self, family: str) -> None:
        self.family = family
        self._execution_device = torch.device("cpu")

    def to(self, device: Any) -> NoopPipeline:
        return self

    def set_progress_bar_config(self, **_: Any) -> None:
        pass

    def encode_prompt(self, prompt: str, **kwargs: Any) -> tuple[torch.Tensor, ...]:
        count = kwargs.get("num_images_per_prompt") or kwargs.get("num_videos_per_prompt") or 1
        embedding = torch.zeros(count, 1, 1)
        return (embedding,) * (4 if self.family == "sdxl" else 2)

    def __call__(
        self,
        *,
        prompt_embeds: torch.Tensor,
        width: int,
        height: int,
        num_inference_steps: int,
        callback_on_step_end: Callable[..., Any] | None = None,
        num_frames: int = 1,
        **_: Any,
    ) -> NoopOutput:
        for step in range(num_inference_steps):
            if callback_on_step_end is not None:
                callback_on_step_end(self, step, None, {})
        batch = prompt_embeds.shape[0]
        if self.family == "sdxl":
            return NoopOutput(images=np.zeros((batch, height, width, 3), dtype=np.float32))
        return NoopOutput(frames=np.zeros((batch, num_frames, height, width, 3), dtype=np.float32))
