"""Playground conversations (spec section 4): a user's messages kept per conversation, each turn at the
conversation's content tier, and the conversation as an SDXL prompt.

A conversation never goes below its tier: a turn runs at the higher of the conversation's tier and
the tier its own text needs (or asks for), and the conversation keeps the higher one. The profile
must allow the turn's tier, and the content policy refuses prohibited text at every tier.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.db.models import Conversation, Message, Project
from ourvidz.jobs.content import check_text
from ourvidz.jobs.create import ensure_profile
from ourvidz.jobs.errors import NotFound
from ourvidz.policy import ContentPolicy, ContentTier
from ourvidz.prompts.conversation import conversation_prompt
from ourvidz.prompts.templates import Templates

HISTORY = 20  # messages of a conversation sent to the chat worker with each turn
_TIERS = list(ContentTier)  # in rank order: artistic < explicit < unrestricted


@dataclass(frozen=True, slots=True)
class Turn:
    conversation_id: uuid.UUID
    tier: ContentTier
    messages: list[dict[str, str]]  # the tier's system prompt, then the history ending with this turn
    sdxl_prompt: str


def record_turn(
    sessions: sessionmaker[Session],
    templates: Templates,
    user_id: uuid.UUID,
    message: str,
    *,
    conversation_id: uuid.UUID | None = None,
    project_id: uuid.UUID | None = None,
    requested: ContentTier | None = None,
    policy: ContentPolicy | None = None,
) -> Turn:
    """Check the text and the ids, keep the user's message, raise the conversation's tier if this turn
    goes higher; returns what the chat worker is asked."""
    verdict = check_text(sessions, user_id, message, requested or ContentTier.ARTISTIC, policy)
    ensure_profile(sessions, user_id)
    with sessions.begin() as session:
        if project_id is not None:
            project = session.get(Project, project_id)
            if project is None or project.user_id != user_id:
                raise NotFound("project not found")
        if conversation_id is not None:
            conversation = session.get(Conversation, conversation_id)
            if conversation is None or conversation.user_id != user_id:
                raise NotFound("conversation not found")
            if _TIERS.index(conversation.content_tier) > _TIERS.index(verdict.tier):
                # the conversation runs above this message: the profile must still allow its tier
                check_text(sessions, user_id, message, conversation.content_tier, policy)
            tier = ContentTier(max(conversation.content_tier, verdict.tier, key=_TIERS.index))
            conversation.content_tier = tier
        else:
            tier = verdict.tier
            conversation = Conversation(
                user_id=user_id, project_id=project_id, title=message[:60], content_tier=tier
            )
            session.add(conversation)
            session.flush()
        session.add(Message(conversation_id=conversation.id, sender="user", content=message))
        kept = conversation.id
        history = [
            {"role": m.sender, "content": m.content}
            for m in session.scalars(
                select(Message).where(Message.conversation_id == kept).order_by(Message.created_at)
            ).all()[-HISTORY:]
        ]
    system = templates.chat_prompt(tier)
    return Turn(
        kept, tier, [{"role": "system", "content": system}, *history],
        conversation_prompt([m["content"] for m in history if m["role"] == "user"]).text,
    )  # fmt: skip


def store_reply(sessions: sessionmaker[Session], turn: Turn, reply: str) -> uuid.UUID:
    """Keep the chat worker's reply; returns the message's id."""
    with sessions.begin() as session:
        answer = Message(conversation_id=turn.conversation_id, sender="assistant", content=reply)
        session.add(answer)
        session.flush()
        return answer.id
