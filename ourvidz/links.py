"""Links to stored files that a browser opens without a user's token: the pictures and downloads on a
job's run page in the Prefect UI.

Storage that signs URLs itself (S3, GCS) gives its own; otherwise the link is the gateway's file route
with a short JWT for that one file (its own audience, so it is no user token), signed with the JWT
secret every process shares. Links last `LINK_SECONDS`, the longest an S3 presigned URL may.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import jwt

from ourvidz.auth import ALGORITHM
from ourvidz.config import Settings
from ourvidz.storage import Storage

LINK_SECONDS = 7 * 24 * 3600
FILE_AUDIENCE = "ourvidz:file"


def public_url(settings: Settings) -> str:
    return (settings.public_url or f"http://127.0.0.1:{settings.api_port}").rstrip("/")


def file_link(settings: Settings, storage: Storage, bucket: str, key: str) -> str:
    signed = storage.signed_url(bucket, key, expires_seconds=LINK_SECONDS)
    if signed is not None:
        return signed
    assert settings.jwt_secret is not None  # filled in by Settings
    claims = {
        "aud": FILE_AUDIENCE,
        "sub": f"{bucket}/{key}",
        "exp": datetime.now(UTC) + timedelta(seconds=LINK_SECONDS),
    }
    token = jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm=ALGORITHM)
    return f"{public_url(settings)}/files/{quote(bucket)}/{quote(key)}?token={token}"


def link_opens(settings: Settings, token: str, bucket: str, key: str) -> bool:
    """Whether `token` (from a file link) is valid, unexpired and for this very file."""
    assert settings.jwt_secret is not None
    try:
        claims = jwt.decode(
            token, settings.jwt_secret.get_secret_value(), algorithms=[ALGORITHM], audience=FILE_AUDIENCE,
            options={"require": ["sub", "exp", "aud"]},
        )  # fmt: skip
    except jwt.PyJWTError:
        return False
    return claims["sub"] == f"{bucket}/{key}"
