"""Who may call what, in process: forged tokens, signed worker callbacks (their life cycle, replays,
tampering, staleness, bodies that are not valid), the worker registry and the chat worker's health."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import select

from ourvidz.api.routes.callbacks import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_callback
from ourvidz.db.models import Image, Job, Message
from ourvidz.job_status import JobStatus
from ourvidz.jobs.create import JobRequest, create_job
from tests.gateway.conftest import Gateway
from tests.peers import FakeChatWorker
from tests.signing import callback_headers


def _forged_tokens(gateway: Gateway) -> dict[str, str]:
    good = gateway.token()
    header, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    assert gateway.settings.jwt_secret is not None
    secret = gateway.settings.jwt_secret.get_secret_value()

    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return {
        "tampered": f"{header}.{b64(claims | {'app_metadata': {'roles': ['admin']}})}.{signature}",
        "expired": jwt.encode(claims | {"exp": datetime.now(UTC) - timedelta(minutes=1)}, secret),
        "wrong audience": jwt.encode(claims | {"aud": "someone-else"}, secret),
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        "other secret": jwt.encode(claims, "not-our-secret-but-long-enough-for-hs256"),
    }


def test_forged_tokens_are_refused(gateway: Gateway) -> None:
    for name, token in _forged_tokens(gateway).items():
        answer = httpx.get(f"{gateway.url}/test-edge-functions", headers={"authorization": f"Bearer {token}"})
        assert (answer.status_code, answer.json()["code"]) == (401, "INVALID_TOKEN"), name


def _job(gateway: Gateway, job_type: str, **metadata: Any) -> Job:
    request = JobRequest(user_id=gateway.user(), job_type=job_type, prompt="x", metadata=metadata)
    return create_job(gateway.sessions, request).job


def test_signed_callbacks_follow_the_life_cycle(gateway: Gateway) -> None:
    job = _job(gateway, "sdxl_image_high", num_images=3)
    processing = gateway.callback({"jobId": str(job.id), "status": "processing"})
    assert processing.status_code == 200 and processing.json()["job"]["status"] == "processing"
    again = gateway.callback({"jobId": str(job.id), "status": "processing"})
    assert again.status_code == 200 and "lease is renewed" in again.json()["message"]
    paths = [f"{job.user_id}/{job.id}/{i}.png" for i in range(3)]
    done = {"jobId": str(job.id), "status": "completed", "imageUrls": paths, "enhancedPrompt": "x, detailed"}
    completed = gateway.callback(done)
    assert completed.status_code == 200 and completed.json()["job"]["status"] == "completed"
    with gateway.sessions() as session:
        row = session.get_one(Job, job.id)
        images = session.scalars(
            select(Image).where(Image.job_id == job.id).order_by(Image.image_index)
        ).all()
    assert (row.status, row.enhanced_prompt) == (JobStatus.COMPLETED, "x, detailed")
    assert [i.storage_key for i in images] == paths and row.image_id == images[0].id
    back = gateway.callback({"jobId": str(job.id), "status": "processing"})
    assert (back.status_code, back.json()["code"]) == (409, "ILLEGAL_TRANSITION")
    missing = gateway.callback({"jobId": str(uuid.uuid4()), "status": "failed"})
    assert missing.status_code == 404


def test_callback_replay_tampering_and_staleness_are_refused(gateway: Gateway) -> None:
    job = _job(gateway, "video_fast")
    body = {"job_id": str(job.id), "status": "failed", "error_message": "out of memory"}
    raw = json.dumps(body).encode()
    assert gateway.settings.callback_secret is not None
    secret = gateway.settings.callback_secret.get_secret_value()
    stale = gateway.callback(raw, at=int(time.time()) - 7200)
    assert (stale.status_code, stale.json()["code"]) == (401, "STALE_CALLBACK")
    message_id = f"msg_{uuid.uuid4().hex}"
    assert gateway.callback(raw, message_id=message_id).status_code == 200
    replay = gateway.callback(raw, message_id=message_id)
    assert (replay.status_code, replay.json()["code"]) == (401, "REPLAYED_CALLBACK")
    report = json.dumps({"jobId": str(job.id), "status": "completed"}).encode()
    url = f"{gateway.url}/job-callback"
    tampered = httpx.post(
        url, content=report.replace(b"completed", b"failed"), headers=callback_headers(secret, report)
    )
    assert (tampered.status_code, tampered.json()["code"]) == (401, "INVALID_SIGNATURE")
    garbled = {**callback_headers(secret, report), "webhook-signature": "v1 no comma"}
    malformed = httpx.post(url, content=report, headers=garbled)
    assert (malformed.status_code, malformed.json()["code"]) == (401, "INVALID_SIGNATURE")
    unsigned = httpx.post(url, json=body)
    assert (unsigned.status_code, unsigned.json()["code"]) == (401, "UNAUTHORIZED")
    with gateway.sessions() as session:
        row = session.get_one(Job, job.id)
    assert (row.status, row.error_code, row.error_message) == (
        JobStatus.FAILED,
        "WORKER_FAILED",
        "out of memory",
    )


def test_the_deprecated_signature_and_the_seed_workers_service_key_are_accepted(gateway: Gateway) -> None:
    job, url = _job(gateway, "video_fast"), f"{gateway.url}/job-callback"
    assert gateway.settings.callback_secret is not None and gateway.settings.service_key is not None
    secret, key = (
        gateway.settings.callback_secret.get_secret_value(),
        gateway.settings.service_key.get_secret_value(),
    )
    raw = json.dumps({"jobId": str(job.id), "status": "processing"}).encode()
    now = int(time.time())
    legacy = {TIMESTAMP_HEADER: str(now), SIGNATURE_HEADER: sign_callback(secret, now, raw)}
    assert httpx.post(url, content=raw, headers=legacy).status_code == 200
    replay = httpx.post(url, content=raw, headers=legacy)
    assert (replay.status_code, replay.json()["code"]) == (401, "REPLAYED_CALLBACK")
    forged = httpx.post(url, content=raw, headers={**legacy, SIGNATURE_HEADER: "v1=00"})
    assert (forged.status_code, forged.json()["code"]) == (401, "INVALID_SIGNATURE")
    done = {"job_id": str(job.id), "status": "completed", "assets": [f"{job.user_id}/{job.id}/0.mp4"]}
    wrong = httpx.post(url, json=done, headers={"authorization": "Bearer not-the-key"})
    assert (wrong.status_code, wrong.json()["code"]) == (401, "UNAUTHORIZED")
    seed_worker = httpx.post(url, json=done, headers={"authorization": f"Bearer {key}"})
    assert seed_worker.status_code == 200, seed_worker.text
    assert (seed_worker.json()["jobId"], seed_worker.json()["status"]) == (str(job.id), "completed")


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b'{"jobId": "12", "status": "completed"}', b'{"jobId": "%s", "status": "done"}'],
    ids=["invalid JSON", "empty", "not a uuid", "unknown status"],
)
def test_a_signed_callback_that_is_not_valid_is_a_400(gateway: Gateway, body: bytes) -> None:
    job = _job(gateway, "image_fast")
    answer = gateway.callback(body.replace(b"%s", str(job.id).encode()))
    assert (answer.status_code, answer.json()["code"]) == (400, "INVALID_PARAMETERS"), answer.text
    with gateway.sessions() as session:
        assert session.get_one(Job, job.id).status is JobStatus.QUEUED


@pytest.fixture
def chat_worker(gateway: Gateway) -> Iterator[FakeChatWorker]:
    worker = FakeChatWorker()
    registered = httpx.post(
        f"{gateway.url}/register-chat-worker",
        json={"workerUrl": worker.url, "capabilities": ["chat"], "maxConcurrentChats": 4},
        headers=gateway.service(),
    )
    assert registered.status_code == 200, registered.text
    assert registered.json()["details"]["maxConcurrentChats"] == 4
    yield worker
    worker.stop()
    gateway.forget_chat_worker()


def test_chat_worker_registry_health_and_playground(gateway: Gateway, chat_worker: FakeChatWorker) -> None:
    user = gateway.user()
    headers = gateway.headers(user)
    active = httpx.get(f"{gateway.url}/get-active-worker-url", headers=headers).json()
    assert active["workerUrl"] == chat_worker.url and active["isHealthy"] is True
    assert active["registrationInfo"]["registrationMethod"] == "register-chat-worker"
    chat = f"{gateway.url}/playground-chat"
    first = httpx.post(chat, json={"message": "hello"}, headers=headers)
    assert first.status_code == 200 and first.json()["response"] == "echo: hello"
    conversation = first.json()["conversation_id"]
    second = httpx.post(chat, json={"message": "again", "conversation_id": conversation}, headers=headers)
    assert second.json()["response"] == "echo: again"
    assert (second.json()["sdxl_prompt"], second.json()["content_tier"]) == ("hello, again", "artistic")
    assert " ".join(m["role"] for m in chat_worker.requests[-1]["messages"]) == "system user assistant user"
    peek = {"message": "peek", "conversation_id": conversation}
    assert httpx.post(chat, json=peek, headers=gateway.headers(gateway.user())).status_code == 404
    chat_worker.healthy = False
    try:
        down = httpx.get(f"{gateway.url}/get-active-worker-url", headers=headers).json()
        assert down["isHealthy"] is False and down["healthError"] == "HTTP 503"
        health = httpx.get(f"{gateway.url}/health-check-workers", headers=headers).json()
        assert health["workers"]["chat"]["status"] == "unhealthy" and health["overallStatus"] != "healthy"
        refused = httpx.post(chat, json={"message": "kept", "conversation_id": conversation}, headers=headers)
        assert (refused.status_code, refused.json()["code"]) == (503, "CHAT_WORKER_UNAVAILABLE")
    finally:
        chat_worker.healthy = True
    with gateway.sessions() as session:
        query = select(Message).where(Message.conversation_id == uuid.UUID(conversation))
        contents = [m.content for m in session.scalars(query.order_by(Message.created_at))]
    assert contents == ["hello", "echo: hello", "again", "echo: again", "kept"]


def test_worker_urls_too_long_to_keep_are_refused(gateway: Gateway) -> None:
    long_url = "https://" + "a" * 60 + "." + ".".join(["b" * 60] * 40) + ".example"
    for path, body in (("/register-chat-worker", {"workerUrl": long_url}),
                       ("/update-worker-url", {"workerType": "wan", "url": long_url})):  # fmt: skip
        answer = httpx.post(f"{gateway.url}{path}", json=body, headers=gateway.service())
        assert (answer.status_code, answer.json()["code"]) == (400, "INVALID_PARAMETERS"), answer.text
