"""Who a caller is: Supabase-compatible HS256 user tokens and the application roles.

Tokens carry `sub` (the profile id), `role` (the Postgres role, `authenticated`), `aud`, `iat`, `exp`
and the application roles under `app_metadata.roles`, where Supabase keeps server-assigned claims.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import jwt

ALGORITHM = "HS256"


class Role(StrEnum):
    ADMIN = "admin"
    MODERATOR = "moderator"
    PREMIUM_USER = "premium_user"
    BASIC_USER = "basic_user"
    GUEST = "guest"


class InvalidToken(ValueError):
    """A token that is malformed, unsigned, tampered with, expired or for another audience."""


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: uuid.UUID
    roles: frozenset[Role]

    @property
    def is_admin(self) -> bool:
        return Role.ADMIN in self.roles


def mint_token(
    secret: str,
    audience: str,
    user_id: uuid.UUID,
    roles: frozenset[Role] = frozenset(),
    ttl: timedelta = timedelta(hours=1),
) -> str:
    now = datetime.now(UTC)
    claims = {
        "sub": str(user_id),
        "role": "authenticated",
        "aud": audience,
        "iat": now,
        "exp": now + ttl,
        "app_metadata": {"roles": sorted(roles)},
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def decode_token(secret: str, audience: str, token: str) -> Principal:
    """Verify signature, expiry and audience (HS256 only: `alg=none` and others are refused)."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], audience=audience,
            options={"require": ["sub", "exp", "aud"]},
        )  # fmt: skip
        user_id = uuid.UUID(claims["sub"])
        app_metadata = claims.get("app_metadata") or {}
        roles = frozenset(Role(name) for name in app_metadata.get("roles", []))
    except (jwt.PyJWTError, ValueError, TypeError, AttributeError) as exc:
        raise InvalidToken(str(exc)) from exc
    return Principal(user_id=user_id, roles=roles)
