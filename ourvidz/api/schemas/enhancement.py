"""enhance-prompt bodies of both eras: `prompt`/`original_prompt`, `jobType`/`job_type` (a catalog type,
or just `image`/`video` as the mobile prompt input sends it), `selectedModel`/`enhancement_model`."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field

from ourvidz.api.schemas.common import Metadata, Request, either
from ourvidz.generation.request import MAX_PROMPT_CHARS

ENHANCER_MODELS = ("qwen_instruct", "qwen_base")
NO_ENHANCEMENT_MODEL = "none"
# A bare output kind names the default job type of that kind, at the request's quality.
BARE_JOB_TYPES = {"image": "sdxl_image_{quality}", "video": "video_{quality}"}


class EnhancePromptRequest(Request):
    prompt: str | None = either("prompt", "original_prompt", "originalPrompt", max_length=MAX_PROMPT_CHARS)
    job_type: str | None = either("jobType", "job_type", max_length=64)
    format: str | None = Field(default=None, max_length=16)
    quality: Literal["fast", "high"] | None = None
    selected_model: str | None = either("selectedModel", "enhancement_model", "selected_model", max_length=64)
    user_id: uuid.UUID | None = either("user_id", "userId")
    regeneration: bool = False
    selected_presets: list[str] | None = either("selectedPresets", "selected_presets", max_length=50)
    content_type: str | None = either("contentType", "content_type", max_length=32)
    model_id: str | None = either("model_id", "modelId", max_length=128)
    metadata: Metadata | None = None

    def job_type_name(self) -> str:
        """The catalog job type to enhance for (an unknown name is the caller's to refuse)."""
        name = (self.job_type or "image").strip().lower()
        return BARE_JOB_TYPES.get(name, name).format(quality=self.quality or "fast")

    def model(self) -> str | None:
        """The chat worker's model to ask for; None for its default (an unknown name among them)."""
        return self.selected_model if self.selected_model in ENHANCER_MODELS else None

    @property
    def skips_enhancement(self) -> bool:
        return self.selected_model == NO_ENHANCEMENT_MODEL

    @property
    def exact_copy(self) -> bool:
        """A promptless exact copy of a reference image: there is nothing to enhance."""
        return bool((self.metadata or {}).get("exact_copy_mode")) and not self.prompt


class EnhancePromptResponse(BaseModel):
    success: bool = True
    original_prompt: str
    enhanced_prompt: str
    enhancement_strategy: str
    enhancement_metadata: dict[str, Any]
    optimization: dict[str, Any]
