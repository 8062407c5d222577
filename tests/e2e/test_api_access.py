"""Who may call what, signed callbacks, worker registry, realtime, and a schemathesis fuzz run."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from ourvidz.api.deps import SERVICE_KEY_HEADER
from ourvidz.db.session import sessions_for
from ourvidz.jobs.create import ensure_profile
from tests.e2e.conftest import OURVIDZ, Orchestra, extra_gateway
from tests.peers import FakeChatWorker, SwitchableProxy
from tests.schemathesis_hooks import SECRET_ENV

SMALL = {"width": 64, "height": 64, "steps": 2}
ROOT = Path(__file__).resolve().parents[2]


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
        ("POST", "/job-callback", {"jobId": job["id"], "status": "completed"}, (401, 401, 401, 401, 200)),
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
    tokens = orchestra.token(owner), orchestra.token(other)
    mine_url = f"{ws_url}/realtime?access_token={tokens[0]}"
    theirs_url = f"{ws_url}/functions/v1/realtime?access_token={tokens[1]}"
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
    log = orchestra.stack.logs["gateway"]  # the tokens never reach the gateway's log, which only we read
    assert log.stat().st_mode & 0o777 == 0o600
    text = log.read_text()
    assert "/realtime?access_token=[redacted]" in text
    assert [token for token in tokens if token.split(".")[2] in text] == []  # the ones the sockets sent


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
    """Fuzz every operation as an admin and as an ordinary user (with a profile, so requests get past
    it); a chat turn only while a healthy chat worker is registered (without one, 503 is the right
    answer, and the fuzzed worker-URL endpoints would register unreachable ones)."""
    url, database = isolated_gateway
    user = uuid.uuid4()
    ensure_profile(sessions_for(database), user)
    tokens = {"admin": orchestra.token(uuid.uuid4(), admin=True), "user": orchestra.token(user)}
    chat_worker = FakeChatWorker()
    try:
        for token in tokens.values():
            _fuzz(orchestra, url, token, "--exclude-path", "/playground-chat")
        registered = httpx.post(
            f"{url}/register-chat-worker", json={"workerUrl": chat_worker.url}, headers=_service(orchestra)
        )
        assert registered.status_code == 200
        for token in tokens.values():
            _fuzz(orchestra, url, token, "--include-path", "/playground-chat")
    finally:
        chat_worker.stop()


def _fuzz(orchestra: Orchestra, url: str, token: str, *selection: str) -> None:
    """Run schemathesis against the gateway's OpenAPI schema, job callbacks signed by the hook in
    `tests.schemathesis_hooks`; fails with its report if any check failed."""
    assert orchestra.settings.callback_secret is not None
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks", "PYTHONPATH": str(ROOT),
           SECRET_ENV: orchestra.settings.callback_secret.get_secret_value()}  # fmt: skip
    result = subprocess.run(
        [str(Path(OURVIDZ[0]).with_name("schemathesis")), "run", f"{url}/openapi.json", *selection,
         "--checks", "not_a_server_error,signed_callbacks_pass", "--max-examples", "10",
         "--request-timeout", "30", "--header", f"Authorization: Bearer {token}",
         "--generation-deterministic"],
        capture_output=True, text=True, timeout=900, env=env, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
