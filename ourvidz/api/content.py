"""The content policy at the gateway: refused text is answered 403 and nothing is recorded."""

from __future__ import annotations

import uuid
from contextlib import nullcontext
from typing import Any

from sqlalchemy.orm import Session

from ourvidz.api.errors import ApiError
from ourvidz.api.state import Gateway
from ourvidz.jobs.content import check_content, content_policy
from ourvidz.policy import ContentProhibited, ContentTier, ContentTierNotAllowed, PolicyError, Verdict


def enforce_content(
    gw: Gateway,
    user_id: uuid.UUID,
    text: str,
    requested: ContentTier | None = None,
    session: Session | None = None,
) -> Verdict:
    """The tier `text` runs at for this user, or a 403 with the policy's code.

    Reads the profile in `session` when given (the caller's transaction), else in a session of its own.
    """
    with nullcontext(session) if session is not None else gw.sessions() as active:
        try:
            return check_content(active, user_id, text, requested, content_policy(gw.settings))
        except PolicyError as exc:
            raise ApiError(403, exc.code, str(exc), _details(exc)) from None


def _details(exc: PolicyError) -> dict[str, Any] | None:
    if isinstance(exc, ContentTierNotAllowed):
        return {"requested": exc.requested, "allowed": exc.allowed, "ageVerified": exc.age_verified}
    if isinstance(exc, ContentProhibited):
        return {"category": exc.category, "reference": exc.text_hash}
    return None
