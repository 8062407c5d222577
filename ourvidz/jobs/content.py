"""The content check of a prompt against its owner's profile, before any model work.

One rule for every entry point: the gateway runs it before a job is recorded (403 to the caller),
the flow runs it again when the job starts and on the final (enhanced) prompt, since a profile's
tier can change and an enhancer can add words. The registered moderation model, if any, is asked
too; every refusal is recorded (category, layer, hash) for the metrics.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.config import Settings, get_settings
from ourvidz.db.models import ContentRefusal, Profile, Worker
from ourvidz.egress import policies
from ourvidz.policy import (
    MODERATION,
    ContentPolicy,
    ContentProhibited,
    ContentTier,
    Moderator,
    ProhibitedCategory,
    Verdict,
    check_prompt,
    get_policy,
)

log = logging.getLogger(__name__)


def content_policy(settings: Settings | None = None) -> ContentPolicy:
    """The process's policy: shipped vocabularies plus the operator's, reloaded when they change."""
    settings = settings or get_settings()
    policy = get_policy(settings.vocabularies_dir, settings.semantic_model)
    policy.reload_if_changed()
    return policy


def moderator(session: Session, settings: Settings | None = None) -> Moderator | None:
    """The registered moderation model (`workerType: moderation`), if there is one."""
    row = session.scalar(select(Worker).where(Worker.kind == MODERATION, Worker.name == ""))
    if row is None:
        return None
    settings = settings or get_settings()
    categories = {code.upper(): ProhibitedCategory(c) for code, c in settings.moderation_categories.items()}
    return Moderator(
        row.url, settings.moderation_model, settings.moderation_timeout_seconds, categories,
        policies(settings)[1],
    )  # fmt: skip


def check_content(
    session: Session,
    user_id: uuid.UUID,
    text: str,
    requested: ContentTier | None = None,
    policy: ContentPolicy | None = None,
) -> Verdict:
    """The tier `text` runs at for this user; raises ContentProhibited, ContentTierNotAllowed, or
    ContentCheckUnavailable (a layer the text needs cannot answer).

    A user without a profile yet has the defaults: artistic, not age-verified.
    """
    profile = session.get(Profile, user_id)
    allowed = profile.content_tier_allowed if profile is not None else ContentTier.ARTISTIC
    verified = profile is not None and profile.age_verified
    try:
        return check_prompt(
            policy or content_policy(), text, allowed, verified, requested_tier=requested,
            moderator=moderator(session),
        )  # fmt: skip
    except ContentProhibited as refusal:
        refusal.user_id = user_id
        raise


@contextmanager
def refusals_recorded(sessions: sessionmaker[Session]) -> Iterator[None]:
    """Around a transaction that checks content: a refusal that ends it is recorded after it."""
    try:
        yield
    except ContentProhibited as refusal:
        record_refusal(sessions, refusal)
        raise


def record_refusal(sessions: sessionmaker[Session], refusal: ContentProhibited) -> None:
    """Keep a refusal (category, layer, hash; never the text) for the metrics. Called where the refusal
    is handled, after the transaction it rolled back: a record made inside it would be rolled back too."""
    user_id = refusal.user_id if isinstance(refusal.user_id, uuid.UUID) else None
    try:
        with sessions.begin() as session:
            session.add(ContentRefusal(
                user_id=user_id, category=refusal.category.value, layer=refusal.layer.value,
                text_hash=refusal.text_hash,
            ))  # fmt: skip
    except SQLAlchemyError:
        log.exception("a content refusal could not be recorded (it is refused all the same)")


def check_text(
    sessions: sessionmaker[Session],
    user_id: uuid.UUID,
    text: str,
    requested: ContentTier | None = None,
    policy: ContentPolicy | None = None,
) -> Verdict:
    """`check_content` in a session of its own (an enhancement or a chat turn)."""
    with refusals_recorded(sessions), sessions() as session:
        return check_content(session, user_id, text, requested, policy)
