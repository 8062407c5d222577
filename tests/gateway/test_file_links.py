"""File links (the pictures on a job's run page in the Prefect UI) open one file without a user's
token, and nothing else."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt

from ourvidz.links import FILE_AUDIENCE, file_link
from ourvidz.storage import Storage
from tests.gateway.conftest import Gateway

BUCKET = "sdxl_image_fast"


def _stored(gateway: Gateway, data: bytes) -> str:
    key = f"{uuid.uuid4()}/{uuid.uuid4()}/0.png"
    Storage(gateway.settings.storage_url).put(BUCKET, key, data)
    return key


def _refused(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert set(response.json()) == {"error", "code", "details", "timestamp"}
    assert response.json()["code"] == "INVALID_TOKEN"


def test_a_file_link_opens_its_file_without_a_user(gateway: Gateway) -> None:
    key = _stored(gateway, b"picture bytes")
    link = file_link(gateway.settings, Storage(gateway.settings.storage_url), BUCKET, key)
    assert link.startswith(f"{gateway.url}/files/{BUCKET}/")
    answer = httpx.get(link, timeout=10)
    assert (answer.status_code, answer.content) == (200, b"picture bytes")
    assert httpx.get(f"{gateway.url}/files/{BUCKET}/{key}", timeout=10).status_code == 401  # no link, no user


def test_a_file_link_opens_no_other_file(gateway: Gateway) -> None:
    storage = Storage(gateway.settings.storage_url)
    mine, other = _stored(gateway, b"mine"), _stored(gateway, b"other")
    token = parse_qs(urlsplit(file_link(gateway.settings, storage, BUCKET, mine)).query)["token"][0]
    _refused(httpx.get(f"{gateway.url}/files/{BUCKET}/{other}", params={"token": token}, timeout=10))
    _refused(httpx.get(f"{gateway.url}/files/{BUCKET}/{mine}", params={"token": token[:-2]}, timeout=10))


def test_an_expired_or_user_token_is_no_file_link(gateway: Gateway) -> None:
    key = _stored(gateway, b"old")
    assert gateway.settings.jwt_secret is not None
    secret = gateway.settings.jwt_secret.get_secret_value()
    expired = jwt.encode(
        {"aud": FILE_AUDIENCE, "sub": f"{BUCKET}/{key}", "exp": datetime.now(UTC) - timedelta(minutes=1)},
        secret,
        algorithm="HS256",
    )
    _refused(httpx.get(f"{gateway.url}/files/{BUCKET}/{key}", params={"token": expired}, timeout=10))
    user_token = gateway.token(uuid.UUID(key.split("/")[0]))  # the owner's, but a user token in a link
    _refused(httpx.get(f"{gateway.url}/files/{BUCKET}/{key}", params={"token": user_token}, timeout=10))
    owner = httpx.get(
        f"{gateway.url}/files/{BUCKET}/{key}", headers=gateway.headers(uuid.UUID(key.split("/")[0]))
    )
    assert (owner.status_code, owner.content) == (200, b"old")
