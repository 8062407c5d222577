"""Prompt enhancement and the playground chat (spec section 2 and 4).

enhance-prompt runs the same enhancer as the generation flow's enhance stage (the rules enhancer,
within the job type's token budget), after the content policy. The chat forwards a conversation to
the registered chat worker (OpenAI-compatible `/v1/chat/completions`) and keeps every message, per
user.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from sqlalchemy import select

from ourvidz.api.content import enforce_content
from ourvidz.api.errors import ApiError, not_found
from ourvidz.api.schemas import (
    ChatRequest,
    ChatResponse,
    EnhancePromptRequest,
    EnhancePromptResponse,
    SimpleResponse,
)
from ourvidz.api.security import Admin, User
from ourvidz.api.state import Gateway, gateway
from ourvidz.catalog import UnknownJobType, get_job_type
from ourvidz.db.models import Conversation, Message, Project, SystemConfig
from ourvidz.jobs.content import content_policy
from ourvidz.jobs.create import ensure_profile
from ourvidz.jobs.enhancement import enhance, enhancement_metadata, validate_enhancer
from ourvidz.policy import ContentTier
from ourvidz.prompts.chat import STRATEGY as CHAT_STRATEGY
from ourvidz.prompts.chat import EnhancerFailed, chat_completion
from ourvidz.prompts.conversation import conversation_prompt
from ourvidz.prompts.rules import STRATEGY
from ourvidz.registry import registered_chat_url

router = APIRouter(tags=["enhancement"])
GatewayDep = Annotated[Gateway, Depends(gateway)]
CHAT_TIMEOUT_SECONDS = 60.0
CHAT_HISTORY = 20
PROMPT_CACHE_KEY = "prompt_cache"


@router.post("/enhance-prompt", response_model=EnhancePromptResponse)
def enhance_prompt(
    body: EnhancePromptRequest, response: Response, user: User, gw: GatewayDep
) -> EnhancePromptResponse:
    gw.limits.hit("enhance", user.user_id, response)
    try:
        job_type = get_job_type(body.job_type)
    except UnknownJobType as exc:
        raise ApiError(400, "INVALID_JOB_TYPE", str(exc), {"valid": exc.valid}) from None
    enforce_content(gw, user.user_id, body.prompt)
    chat_url = registered_chat_url(gw.sessions)
    result = enhance(
        body.prompt, job_type, chat_url=chat_url, policy=content_policy(gw.settings),
        timeout=gw.settings.enhancer_timeout_seconds,
    )  # fmt: skip
    metadata = {
        "original_length": len(body.prompt), "enhanced_length": len(result.prompt),
        "expansion_percentage": f"{(len(result.prompt) / len(body.prompt) - 1) * 100:.1f}",
        "job_type": job_type.name, "format": body.format or job_type.format,
        "quality": body.quality or job_type.quality, "is_sdxl": job_type.family == "sdxl",
        "is_video": job_type.output == "video", "enhancement_strategy": result.strategy,
        "model_used": "chat_worker" if result.strategy == CHAT_STRATEGY else "rules", "version": "1",
        **enhancement_metadata(result),
    }  # fmt: skip
    return EnhancePromptResponse(
        original_prompt=body.prompt, enhanced_prompt=result.prompt, enhancement_strategy=result.strategy,
        enhancement_metadata=metadata,
        optimization={"token_count": result.token_count, "token_budget": result.budget,
                      "compression_applied": result.compression_applied},
    )  # fmt: skip


@router.post("/playground-chat", response_model=ChatResponse)
def playground_chat(body: ChatRequest, response: Response, user: User, gw: GatewayDep) -> ChatResponse:
    """One chat turn; the user's message is kept even when no chat worker answers (503)."""
    gw.limits.hit("enhance", user.user_id, response)
    verdict = enforce_content(
        gw, user.user_id, body.message, ContentTier(body.content_tier or ContentTier.ARTISTIC)
    )
    ensure_profile(gw.sessions, user.user_id)
    with gw.sessions.begin() as session:
        if body.project_id is not None:
            project = session.get(Project, body.project_id)
            if project is None or project.user_id != user.user_id:
                raise not_found("project")
        if body.conversation_id is not None:
            conversation = session.get(Conversation, body.conversation_id)
            if conversation is None or conversation.user_id != user.user_id:
                raise not_found("conversation")
        else:
            tier = ContentTier(body.content_tier or ContentTier.ARTISTIC)
            conversation = Conversation(
                user_id=user.user_id, project_id=body.project_id, title=body.message[:60], content_tier=tier
            )
            session.add(conversation)
            session.flush()
        session.add(Message(conversation_id=conversation.id, sender="user", content=body.message))
        conversation_id = conversation.id
        history = [
            {"role": m.sender, "content": m.content}
            for m in session.scalars(
                select(Message).where(Message.conversation_id == conversation_id).order_by(Message.created_at)
            ).all()[-CHAT_HISTORY:]
        ]
    reply = _ask_chat_worker(gw, history)  # the history ends with this turn's message
    with gw.sessions.begin() as session:
        answer = Message(conversation_id=conversation_id, sender="assistant", content=reply)
        session.add(answer)
        session.flush()
        return ChatResponse(
            conversation_id=conversation_id, response=reply, message_id=answer.id, content_tier=verdict.tier,
            sdxl_prompt=conversation_prompt([m["content"] for m in history if m["role"] == "user"]).text,
        )  # fmt: skip


def _ask_chat_worker(gw: Gateway, messages: list[dict[str, str]]) -> str:
    chat_url = registered_chat_url(gw.sessions)
    if chat_url is None:
        raise ApiError(503, "CHAT_WORKER_UNAVAILABLE", "no chat worker is registered; your message was kept")
    try:
        return chat_completion(chat_url, messages, CHAT_TIMEOUT_SECONDS)
    except EnhancerFailed as exc:
        raise ApiError(
            503, "CHAT_WORKER_UNAVAILABLE", "the chat worker did not answer; your message was kept",
            {"reason": str(exc)},
        ) from None  # fmt: skip


@router.post("/refresh-prompt-cache", response_model=SimpleResponse)
def refresh_prompt_cache(_admin: Admin, gw: GatewayDep) -> SimpleResponse:
    """Bump the prompt-cache version that every process compares with the one it loaded."""
    now = datetime.now(UTC).isoformat()
    with gw.sessions.begin() as session:
        row = session.get(SystemConfig, PROMPT_CACHE_KEY, with_for_update=True)
        version = int((row.value if row else {}).get("version", 0)) + 1
        value: dict[str, Any] = {"version": version, "refreshed_at": now}
        if row is None:
            session.add(SystemConfig(key=PROMPT_CACHE_KEY, value=value))
        else:
            row.value = value
    return SimpleResponse(message=f"prompt cache version {version}", details=value)


@router.post("/validate-enhancement-fix", response_model=SimpleResponse)
def validate_enhancement_fix(_admin: Admin, gw: GatewayDep) -> SimpleResponse:
    """Run the fixed regression set through the current enhancer before a cache refresh goes out."""
    cases = validate_enhancer(content_policy(gw.settings))
    failed = [case for case in cases if not case["passed"]]
    return SimpleResponse(
        success=not failed,
        message=f"{len(cases) - len(failed)} of {len(cases)} cases passed",
        details={"enhancement_strategy": STRATEGY, "cases": cases},
    )
