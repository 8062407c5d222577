"""Who may call what, signed callbacks, worker registry, realtime, and a schemathesis fuzz run."""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from ourvidz.api.deps import SERVICE_KEY_HEADER
from ourvidz.api.routes.callbacks import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_callback
from ourvidz.db.models import Image, Job, Message
from ourvidz.db.session import sessions_for
from ourvidz.job_status import JobStatus
from ourvidz.jobs.create import JobRequest, create_job, ensure_profile
from tests.e2e.conftest import OURVIDZ, Orchestra, extra_gateway, signed_callback
from tests.peers import FakeChatWorker, SwitchableProxy

SMALL = {"width": 64, "height": 64, "steps": 2}


@pytest.fixture(scope="module")
def chat_worker(orchestra: Orchestra) -> Iterator[FakeChatWorker]:
    worker = FakeChatWorker()
    registered = httpx.post(
        f"{orchestra.gateway_url}/register-chat-worker",
        json={"workerUrl": worker.url, "capabilities": ["chat"], "maxConcurrentChats": 4},
        headers=_service(orchestra),
    )
    assert registered.status_code == 200, registered.text
    yield worker
    worker.stop()
    orchestra.forget_chat_worker()


@pytest.fixture
def isolated_gateway(orchestra: Orchestra, private_database: str) -> Iterator[tuple[str, str]]:
    """A gateway on a database of its own whose Prefect is unreachable: nothing it accepts ever runs."""
    proxy = SwitchableProxy("127.0.0.1", 9)
    with extra_gateway(orchestra, f"gateway-{uuid.uuid4().hex[:6]}", proxy.url, private_database) as url:
        yield url, private_database


def _service(orchestra: Orchestra) -> dict[str, str]:
    assert orchestra.settings.service_key is not None
    return {SERVICE_KEY_HEADER: orchestra.settings.service_key.get_secret_value()}


def _user(orchestra: Orchestra) -> uuid.UUID:
    user_id = uuid.uuid4()
    ensure_profile(orchestra.sessions, user_id)
    return user_id


def _wait_final(orchestra: Orchestra, job_id: str, user: uuid.UUID) -> dict[str, Any]:
    for _ in range(600):
        answer = httpx.get(f"{orchestra.gateway_url}/jobs/{job_id}", headers=orchestra.headers(user)).json()
        if answer["job"]["status"] in ("completed", "failed", "cancelled"):
            return answer
        time.sleep(0.2)
    raise AssertionError("job did not finish")


def test_authorization_matrix(orchestra: Orchestra, chat_worker: FakeChatWorker) -> None:
    owner, stranger = _user(orchestra), _user(orchestra)
    body = {"jobType": "sdxl_image_fast", "prompt": "x", "metadata": SMALL}
    job = httpx.post(
        f"{orchestra.gateway_url}/queue-job", json=body, headers=orchestra.headers(owner)
    ).json()["job"]
    done = _wait_final(orchestra, job["id"], owner)
    file_url = done["assets"][0]["url"]
    callers = {
        "anonymous": {},
        "owner": orchestra.headers(owner),
        "stranger": orchestra.headers(stranger),
        "admin": orchestra.headers(_user(orchestra), admin=True),
        "service": _service(orchestra),
    }
    small_job = {"jobType": "image_fast", "prompt": "x", "metadata": SMALL}
    # method, path, body -> expected status for anonymous, owner, stranger, admin, service
    matrix: list[tuple[str, str, Any, tuple[int, ...]]] = [
        ("POST", "/queue-job", small_job, (401, 201, 201, 201, 401)),
        ("GET", f"/jobs/{job['id']}", None, (401, 200, 404, 200, 401)),
        ("POST", f"/jobs/{job['id']}/cancel", None, (401, 409, 404, 409, 401)),
        ("GET", file_url, None, (401, 200, 404, 200, 401)),
        ("POST", "/job-callback", {"jobId": job["id"], "status": "completed"}, (401,) * 5),
        ("POST", "/enhance-prompt", {"prompt": "x", "jobType": "image_fast"}, (401, 200, 200, 200, 401)),
        ("POST", "/playground-chat", {"message": "hello"}, (401, 200, 200, 200, 401)),
        ("POST", "/refresh-prompt-cache", None, (401, 403, 403, 200, 401)),
        ("POST", "/validate-enhancement-fix", None, (401, 403, 403, 200, 401)),
        ("POST", "/generate-admin-image", {"prompt": "x", "model": "sdxl", "quality": "fast"},
         (401, 403, 403, 201, 401)),
        ("GET", "/get-active-worker-url", None, (401, 200, 200, 200, 401)),
        ("GET", "/health-check-workers", None, (401, 200, 200, 200, 401)),
        ("POST", "/update-worker-url", {"workerType": "sdxl", "url": "http://127.0.0.1:9/"},
         (401, 403, 403, 200, 200)),
        ("POST", "/register-chat-worker", {"workerUrl": chat_worker.url}, (401, 403, 403, 200, 200)),
        ("GET", "/test-edge-functions", None, (401, 403, 403, 200, 401)),
    ]  # fmt: skip
    failures = []
    for method, path, body, expected in matrix:
        for (caller, headers), status in zip(callers.items(), expected, strict=True):
            for prefix in ("", "/functions/v1"):
                answer = httpx.request(
                    method, f"{orchestra.gateway_url}{prefix}{path}", json=body, headers=headers, timeout=60
                )
                if answer.status_code != status:
                    failures.append(f"{method} {prefix}{path} as {caller}: {answer.status_code} != {status}")
                elif status >= 400:
                    assert set(answer.json()) == {"error", "code", "details", "timestamp"}
    assert failures == []


def _forged_tokens(orchestra: Orchestra) -> dict[str, str]:
    good = orchestra.token()
    header, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    assert orchestra.settings.jwt_secret is not None
    secret = orchestra.settings.jwt_secret.get_secret_value()

    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return {
        "tampered": f"{header}.{b64(claims | {'app_metadata': {'roles': ['admin']}})}.{signature}",
        "expired": jwt.encode(claims | {"exp": datetime.now(UTC) - timedelta(minutes=1)}, secret),
        "wrong audience": jwt.encode(claims | {"aud": "someone-else"}, secret),
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        "other secret": jwt.encode(claims, "not-our-secret-but-long-enough-for-hs256"),
    }


def test_forged_tokens_are_refused(orchestra: Orchestra) -> None:
    for name, token in _forged_tokens(orchestra).items():
        answer = httpx.get(
            f"{orchestra.gateway_url}/test-edge-functions", headers={"authorization": f"Bearer {token}"}
        )
        assert (answer.status_code, answer.json()["code"]) == (401, "INVALID_TOKEN"), name


def _callback(
    url: str, orchestra: Orchestra, body: dict[str, Any], stamp: int | None = None, tamper: bool = False
) -> httpx.Response:
    return signed_callback(orchestra, url, body, stamp=stamp, tamper=tamper)


def _isolated_job(database: str, job_type: str, **metadata: Any) -> tuple[sessionmaker[Session], Job]:
    """A queued job in the isolated gateway's database (never dispatched, so callbacks alone move it)."""
    sessions = sessions_for(database)
    user = uuid.uuid4()
    ensure_profile(sessions, user)
    return sessions, create_job(
        sessions, JobRequest(user_id=user, job_type=job_type, prompt="x", metadata=metadata)
    ).job


def test_signed_callbacks_follow_the_life_cycle(
    orchestra: Orchestra, isolated_gateway: tuple[str, str]
) -> None:
    url, database = isolated_gateway
    sessions, job = _isolated_job(database, "sdxl_image_high", num_images=3)
    user = job.user_id
    processing = _callback(url, orchestra, {"jobId": str(job.id), "status": "processing"})
    assert processing.status_code == 200 and processing.json()["job"]["status"] == "processing"
    again = _callback(url, orchestra, {"jobId": str(job.id), "status": "processing"})
    assert again.status_code == 200 and "nothing changed" in again.json()["message"]
    paths = [f"{user}/{job.id}/{i}.png" for i in range(3)]
    done = {"jobId": str(job.id), "status": "completed", "imageUrls": paths, "enhancedPrompt": "x, detailed"}
    completed = _callback(url, orchestra, done)
    assert completed.status_code == 200 and completed.json()["job"]["status"] == "completed"
    with sessions() as session:
        row = session.get_one(Job, job.id)
        images = session.scalars(
            select(Image).where(Image.job_id == job.id).order_by(Image.image_index)
        ).all()
    assert (row.status, row.enhanced_prompt) == (JobStatus.COMPLETED, "x, detailed")
    assert [i.storage_key for i in images] == paths and row.image_id == images[0].id
    back = _callback(url, orchestra, {"jobId": str(job.id), "status": "processing"})
    assert (back.status_code, back.json()["code"]) == (409, "ILLEGAL_TRANSITION")
    missing = _callback(url, orchestra, {"jobId": str(uuid.uuid4()), "status": "failed"})
    assert missing.status_code == 404


def test_callback_replay_tampering_and_staleness_are_refused(
    orchestra: Orchestra, isolated_gateway: tuple[str, str]
) -> None:
    url, database = isolated_gateway
    sessions, job = _isolated_job(database, "video_fast")
    body = {"job_id": str(job.id), "status": "failed", "error_message": "out of memory"}
    raw = json.dumps(body).encode()
    stamp = int(time.time())
    assert orchestra.settings.callback_secret is not None
    headers = {
        TIMESTAMP_HEADER: str(stamp), "content-type": "application/json",
        SIGNATURE_HEADER: sign_callback(orchestra.settings.callback_secret.get_secret_value(), stamp, raw),
    }  # fmt: skip
    assert httpx.post(f"{url}/job-callback", content=raw, headers=headers).status_code == 200
    replay = httpx.post(f"{url}/job-callback", content=raw, headers=headers)
    assert (replay.status_code, replay.json()["code"]) == (401, "REPLAYED_CALLBACK")
    tampered = _callback(url, orchestra, {"jobId": str(job.id), "status": "completed"}, tamper=True)
    assert (tampered.status_code, tampered.json()["code"]) == (401, "INVALID_SIGNATURE")
    stale = _callback(url, orchestra, {"jobId": str(job.id), "status": "failed"}, stamp=stamp - 3600)
    assert (stale.status_code, stale.json()["code"]) == (401, "STALE_CALLBACK")
    unsigned = httpx.post(f"{url}/job-callback", json=body)
    assert (unsigned.status_code, unsigned.json()["code"]) == (401, "UNAUTHORIZED")
    with sessions() as session:
        row = session.get_one(Job, job.id)
    assert (row.status, row.error_code, row.error_message) == (
        JobStatus.FAILED,
        "WORKER_FAILED",
        "out of memory",
    )


def test_chat_worker_registry_health_and_playground(
    orchestra: Orchestra, chat_worker: FakeChatWorker
) -> None:
    user = _user(orchestra)
    headers = orchestra.headers(user)
    active = httpx.get(f"{orchestra.gateway_url}/get-active-worker-url", headers=headers).json()
    assert active["workerUrl"] == chat_worker.url and active["isHealthy"] is True
    assert active["registrationInfo"]["registrationMethod"] == "register-chat-worker"
    first = httpx.post(f"{orchestra.gateway_url}/playground-chat", json={"message": "hello"}, headers=headers)
    assert first.status_code == 200 and first.json()["response"] == "echo: hello"
    conversation = first.json()["conversation_id"]
    chat = f"{orchestra.gateway_url}/playground-chat"
    second = httpx.post(chat, json={"message": "again", "conversation_id": conversation}, headers=headers)
    assert second.json()["response"] == "echo: again"
    assert (second.json()["sdxl_prompt"], second.json()["content_tier"]) == ("hello, again", "artistic")
    assert " ".join(m["role"] for m in chat_worker.requests[-1]["messages"]) == "system user assistant user"
    peek = {"message": "peek", "conversation_id": conversation}
    theirs = httpx.post(chat, json=peek, headers=orchestra.headers(_user(orchestra)))
    assert theirs.status_code == 404
    chat_worker.healthy = False
    try:
        down = httpx.get(f"{orchestra.gateway_url}/get-active-worker-url", headers=headers).json()
        assert down["isHealthy"] is False and down["healthError"] == "HTTP 503"
        health = httpx.get(f"{orchestra.gateway_url}/health-check-workers", headers=headers).json()
        assert health["workers"]["chat"]["status"] == "unhealthy" and health["overallStatus"] == "degraded"
        refused = httpx.post(chat, json={"message": "kept", "conversation_id": conversation}, headers=headers)
        assert (refused.status_code, refused.json()["code"]) == (503, "CHAT_WORKER_UNAVAILABLE")
    finally:
        chat_worker.healthy = True
    with orchestra.sessions() as session:
        query = select(Message).where(Message.conversation_id == uuid.UUID(conversation))
        contents = [m.content for m in session.scalars(query.order_by(Message.created_at))]
    assert contents == ["hello", "echo: hello", "again", "echo: again", "kept"]


def test_self_check_reports_every_dependency(orchestra: Orchestra, chat_worker: FakeChatWorker) -> None:
    answer = httpx.get(
        f"{orchestra.gateway_url}/test-edge-functions",
        headers=orchestra.headers(_user(orchestra), admin=True),
    ).json()
    assert set(answer["checks"]) == {
        "database",
        "storage",
        "prefect_api",
        "deployments",
        "work_pool",
        "chat_worker",
        "dispatch",
    }
    assert answer["success"] is True, answer


def test_realtime_websocket_streams_own_jobs_only(orchestra: Orchestra) -> None:
    owner, other = _user(orchestra), _user(orchestra)
    ws_url = orchestra.gateway_url.replace("http://", "ws://")
    mine_url = f"{ws_url}/realtime?access_token={orchestra.token(owner)}"
    theirs_url = f"{ws_url}/functions/v1/realtime?access_token={orchestra.token(other)}"
    with connect(mine_url) as mine, connect(theirs_url) as theirs:
        time.sleep(0.5)
        body = {"jobType": "sdxl_image_fast", "prompt": "x", "metadata": {**SMALL, "steps": 4}}
        job = httpx.post(
            f"{orchestra.gateway_url}/queue-job", json=body, headers=orchestra.headers(owner)
        ).json()["job"]
        updates = []
        while not updates or updates[-1]["status"] not in ("completed", "failed"):
            updates.append(json.loads(mine.recv(timeout=60)))
        assert {u["jobId"] for u in updates} == {job["id"]}
        assert updates[0]["status"] == "processing" and updates[-1]["status"] == "completed"
        assert [u["progress"] for u in updates] == sorted(u["progress"] for u in updates)
        assert updates[-1]["progress"] == 100 and updates[-1]["result"]["imageUrl"].startswith("/files/")
        with pytest.raises(TimeoutError):
            theirs.recv(timeout=1)
    with pytest.raises(ConnectionClosed) as closed, connect(f"{ws_url}/realtime?access_token=bad") as refused:
        refused.recv(timeout=5)
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4401, "INVALID_TOKEN")


def test_realtime_sse_fallback(orchestra: Orchestra) -> None:
    user = _user(orchestra)
    with httpx.stream("GET", f"{orchestra.gateway_url}/realtime/sse", headers=orchestra.headers(user),
                      timeout=60) as stream:  # fmt: skip
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        assert next(lines) == ": connected"
        httpx.post(f"{orchestra.gateway_url}/queue-job", json={"jobType": "image_fast", "prompt": "x",
                   "metadata": SMALL}, headers=orchestra.headers(user))  # fmt: skip
        statuses = []
        for line in lines:
            if line.startswith("data: "):
                statuses.append(json.loads(line[6:])["status"])
                if statuses[-1] == "completed":
                    break
    assert statuses[0] == "processing" and statuses[-1] == "completed"


def test_schemathesis_finds_no_server_errors(orchestra: Orchestra, isolated_gateway: tuple[str, str]) -> None:
    """Fuzz every operation; a chat turn only while a healthy chat worker is registered (without one,
    503 is the right answer, and the fuzzed worker-URL endpoints would register unreachable ones)."""
    url, _ = isolated_gateway
    admin = orchestra.token(uuid.uuid4(), admin=True)
    chat_worker = FakeChatWorker()
    try:
        assert _schemathesis(url, admin, "--exclude-path", "/playground-chat") == ""
        registered = httpx.post(
            f"{url}/register-chat-worker", json={"workerUrl": chat_worker.url}, headers=_service(orchestra)
        )
        assert registered.status_code == 200
        assert _schemathesis(url, admin, "--include-path", "/playground-chat") == ""
    finally:
        chat_worker.stop()


def _schemathesis(url: str, token: str, *selection: str) -> str:
    """Run schemathesis against the gateway's OpenAPI schema; returns its report if anything failed."""
    result = subprocess.run(
        [str(Path(OURVIDZ[0]).with_name("schemathesis")), "run", f"{url}/openapi.json", *selection,
         "--checks", "not_a_server_error", "--max-examples", "10", "--request-timeout", "30",
         "--header", f"Authorization: Bearer {token}", "--generation-deterministic"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    return "" if result.returncode == 0 else result.stdout[-6000:] + result.stderr[-2000:]
