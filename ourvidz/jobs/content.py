"""The content check of a prompt against its owner's profile, before any model work.

One rule for every entry point: the gateway runs it before a job is recorded (403 to the caller),
the flow runs it again when the job starts and on the final (enhanced) prompt, since a profile's
tier can change and an enhancer can add words.
"""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session, sessionmaker

from ourvidz.config import Settings, get_settings
from ourvidz.db.models import Profile
from ourvidz.policy import ContentPolicy, ContentTier, Verdict, check_prompt, get_policy


def content_policy(settings: Settings | None = None) -> ContentPolicy:
    """The process's policy: shipped vocabularies plus the operator's, reloaded when they change."""
    policy = get_policy((settings or get_settings()).vocabularies_dir)
    policy.reload_if_changed()
    return policy


def check_content(
    session: Session,
    user_id: uuid.UUID,
    text: str,
    requested: ContentTier | None = None,
    policy: ContentPolicy | None = None,
) -> Verdict:
    """The tier `text` runs at for this user; raises ContentProhibited or ContentTierNotAllowed.

    A user without a profile yet has the defaults: artistic, not age-verified.
    """
    profile = session.get(Profile, user_id)
    allowed = profile.content_tier_allowed if profile is not None else ContentTier.ARTISTIC
    verified = profile is not None and profile.age_verified
    return check_prompt(policy or content_policy(), text, allowed, verified, requested_tier=requested)


def check_text(
    sessions: sessionmaker[Session],
    user_id: uuid.UUID,
    text: str,
    requested: ContentTier | None = None,
    policy: ContentPolicy | None = None,
) -> Verdict:
    """`check_content` in a session of its own (an enhancement or a chat turn)."""
    with sessions() as session:
        return check_content(session, user_id, text, requested, policy)
