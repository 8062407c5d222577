"""playground-chat: one turn's request and answer."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, Field

from ourvidz.api.schemas.common import Request


class ChatRequest(Request):
    message: str = Field(min_length=1, max_length=20_000)
    conversation_id: uuid.UUID | None = None
    project_id: uuid.UUID | None = None
    content_tier: Literal["artistic", "explicit", "unrestricted"] | None = Field(
        default=None, description="The least tier for this turn; a conversation never goes below its tier"
    )
    stream: bool | None = Field(
        default=None,
        description="true: answer `text/event-stream` (`delta` events, then `done` with the ChatResponse, "
        "or `error`); false: JSON; absent: as the Accept header prefers",
    )


class ChatResponse(BaseModel):
    """One chat turn's answer: the JSON body, or the data of the stream's `done` event."""

    success: bool = True
    conversation_id: uuid.UUID
    response: str
    message_id: uuid.UUID = Field(description="The stored assistant message")
    content_tier: str = Field(
        description="The tier this turn runs at: the conversation's, or the detected or asked-for if higher"
    )
    sdxl_prompt: str = Field(description="The user's side of the conversation as an SDXL prompt (75 tokens)")
