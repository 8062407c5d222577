"""What the gateway benchmarks set up: a throwaway PostgreSQL schema (dropped afterwards) and users."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.auth import mint_token
from ourvidz.config import Settings
from ourvidz.db.session import make_engine
from ourvidz.jobs.create import ensure_profile


@contextmanager
def scratch_schema(database: str) -> Iterator[tuple[str, str]]:
    """(database URL searching only the new schema, the schema's name); the schema is dropped after."""
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = make_engine(database)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{database}{'&' if '?' in database else '?'}options=-csearch_path%3D{schema}", schema
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def user_tokens(settings: Settings, sessions: sessionmaker[Session], count: int) -> list[str]:
    """Tokens of `count` new users (each within their own rate limit)."""
    assert settings.jwt_secret is not None
    tokens = []
    for _ in range(count):
        user = uuid.uuid4()
        ensure_profile(sessions, user)
        tokens.append(mint_token(settings.jwt_secret.get_secret_value(), settings.jwt_audience, user))
    return tokens
