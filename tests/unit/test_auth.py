"""Dev tokens: what `ourvidz token` mints is what the gateway accepts, and nothing forged is."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from ourvidz.auth import InvalidToken, Role, decode_token, mint_token

SECRET, AUD = "test-secret-of-enough-length-for-hs256", "authenticated"


def test_round_trip_with_roles() -> None:
    user_id = uuid.uuid4()
    principal = decode_token(SECRET, AUD, mint_token(SECRET, AUD, user_id, frozenset({Role.ADMIN})))
    assert principal.user_id == user_id and principal.is_admin
    plain = decode_token(SECRET, AUD, mint_token(SECRET, AUD, user_id))
    assert plain.roles == frozenset() and not plain.is_admin


def test_supabase_compatible_claims() -> None:
    token = mint_token(SECRET, AUD, uuid.uuid4(), ttl=timedelta(minutes=5))
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience=AUD)
    assert claims["role"] == "authenticated" and claims["aud"] == AUD
    assert 299 <= claims["exp"] - claims["iat"] <= 301


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _bad_tokens() -> dict[str, str]:
    user = str(uuid.uuid4())
    good = mint_token(SECRET, AUD, uuid.UUID(user))
    header, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    now = datetime.now(UTC)
    return {
        "tampered payload": f"{header}.{_b64(claims | {'sub': str(uuid.uuid4())})}.{signature}",
        "tampered roles": f"{header}.{_b64(claims | {'app_metadata': {'roles': ['admin']}})}.{signature}",
        "other secret": mint_token("another-secret-of-enough-length-for-hs256", AUD, uuid.UUID(user)),
        "expired": jwt.encode({"sub": user, "aud": AUD, "exp": now - timedelta(seconds=5)}, SECRET),
        "wrong audience": mint_token(SECRET, "someone-else", uuid.UUID(user)),
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        "no exp": jwt.encode({"sub": user, "aud": AUD}, SECRET),
        "sub not a uuid": jwt.encode({"sub": "alice", "aud": AUD, "exp": now + timedelta(hours=1)}, SECRET),
        "unknown role": jwt.encode(
            {"sub": user, "aud": AUD, "exp": now + timedelta(hours=1), "app_metadata": {"roles": ["root"]}},
            SECRET,
        ),
        "garbage": "not.a.token",
        "empty": "",
    }


@pytest.mark.parametrize("case", sorted(_bad_tokens()))
def test_forged_or_stale_tokens_are_refused(case: str) -> None:
    with pytest.raises(InvalidToken):
        decode_token(SECRET, AUD, _bad_tokens()[case])
