"""Hostile input from an ordinary user account or a leaked service key (issue 17's probes, kept as
regression tests): no request to the stack's own or internal services, no 5xx, nothing written by a
refused request, bounded lists and nesting, realtime sockets that end with their clients."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from websockets.sync.client import connect

from ourvidz.api.schemas.callbacks import MAX_FILES
from ourvidz.api.schemas.common import MAX_DEPTH
from ourvidz.db.models import Image, Job
from ourvidz.jobs.create import JobRequest, create_job
from ourvidz.registry.workers import CHAT, registration
from tests.gateway.conftest import Gateway
from tests.peers import FakeChatWorker, Receiver
from tests.waiting import wait_until

SMALL = {"width": 64, "height": 64, "steps": 2}


def _jobs_of(gateway: Gateway, user: uuid.UUID) -> int:
    with gateway.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Job).where(Job.user_id == user)) or 0)


def _queue(gateway: Gateway, user: uuid.UUID, body: dict[str, Any] | bytes) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {**gateway.headers(user), "content-type": "application/json"}
    return httpx.post(f"{gateway.url}/queue-job", content=content, headers=headers, timeout=30)


def _internal_urls(gateway: Gateway) -> list[str]:
    """Where a user's webhook must never reach: loopback in its spellings, the gateway itself, the
    Prefect API, the cloud metadata service, private networks."""
    return [
        "http://127.0.0.1:9/hook", "http://localhost/hook", "http://127.1/", "http://2130706433/",
        "http://0.0.0.0:8000/", "http://169.254.169.254/latest/meta-data/", "http://[::1]/",
        "http://[::ffff:127.0.0.1]/", "http://10.0.0.1/", "http://192.168.0.10/",
        f"{gateway.url}/metrics", f"{gateway.api_url}/flow_runs/filter",
    ]  # fmt: skip


def test_a_webhook_url_to_an_internal_address_is_refused_and_nothing_is_recorded(gateway: Gateway) -> None:
    for url in _internal_urls(gateway):
        user = gateway.user()  # one each: the rate limit counts refused requests too
        answer = _queue(gateway, user, {"jobType": "sdxl_image_fast", "prompt": "x", "webhookUrl": url})
        body = answer.json()
        assert (answer.status_code, body["code"]) == (400, "URL_NOT_ALLOWED"), (url, answer.text)
        assert body["details"] == {"field": "webhook_url"}
        assert _jobs_of(gateway, user) == 0
    receiver = Receiver()  # a test peer: allowlisted for this tier, as an operator allowlists a receiver
    try:
        allowed = _queue(
            gateway, user, {"jobType": "sdxl_image_fast", "prompt": "x", "webhookUrl": receiver.url}
        )
        assert allowed.status_code == 201, allowed.text
    finally:
        receiver.close()


def test_worker_urls_may_not_point_at_the_stack_itself_or_outside_the_worker_allowlist(
    gateway: Gateway,
) -> None:
    """The embedded default allows loopback for workers (where its own run), never the stack's own
    services; a refused registration changes nothing, so `get-active-worker-url` probes nothing new."""
    chat = FakeChatWorker()
    try:
        registered = httpx.post(f"{gateway.url}/register-chat-worker", json={"workerUrl": chat.url},
                                headers=gateway.service())  # fmt: skip
        assert registered.status_code == 200, registered.text
        refused = [f"{gateway.url}", f"{gateway.api_url}", "http://169.254.169.254/", "http://10.1.2.3:8000/",
                   "http://0.0.0.0:9/", "ftp://127.0.0.1/"]  # fmt: skip
        for url in refused:
            for path, body in (("/register-chat-worker", {"workerUrl": url}),
                               ("/update-worker-url", {"workerType": "chat", "url": url})):  # fmt: skip
                answer = httpx.post(f"{gateway.url}{path}", json=body, headers=gateway.service())
                assert answer.status_code == 400, (path, url, answer.text)
                assert answer.json()["code"] in ("URL_NOT_ALLOWED", "INVALID_PARAMETERS"), answer.text
        worker = registration(gateway.sessions, CHAT)
        assert worker is not None and worker.url == chat.url.rstrip("/")
        active = httpx.get(f"{gateway.url}/get-active-worker-url", headers=gateway.headers())
        assert active.json()["workerUrl"] == chat.url.rstrip("/") and active.json()["isHealthy"] is True
    finally:
        chat.stop()
        gateway.forget_chat_worker()


SURROGATE = '"\\ud800"'  # a JSON escape that parses to a lone surrogate: not UTF-8 text


@pytest.mark.parametrize(
    ("template", "field"),
    [
        ('{"jobType": "sdxl_image_fast", "prompt": "x", "metadata": {"note": @}}', "metadata.note"),
        ('{"jobType": "sdxl_image_fast", "prompt": "x", "metadata": {"prompt": @}}', "metadata.prompt"),
        ('{"jobType": "sdxl_image_fast", "prompt": @}', "prompt"),
        ('{"jobType": "sdxl_image_fast", "prompt": "x", "negative_prompt": @}', "negative_prompt"),
        ('{"jobType": "sdxl_image_fast", "prompt": "x", "metadata": {"a": [1, {"b": @}]}}', "metadata.a.1.b"),
        ('{"jobType": "sdxl_image_fast", "prompt": "x", "metadata": {@: 1}}', "metadata.<key>"),
        ('{"jobType": "sdxl_image_fast", "prompt": "x", "metadata": {"note": "a\\u0000b"}}', "metadata.note"),
    ],
    ids=["metadata value", "metadata.prompt", "prompt", "negative_prompt", "nested", "key", "NUL"],
)  # fmt: skip
def test_text_that_is_not_unicode_is_a_400_naming_the_field_before_anything_is_written(
    gateway: Gateway, template: str, field: str
) -> None:
    user = gateway.user()
    answer = _queue(gateway, user, template.replace("@", SURROGATE).encode())
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "INVALID_PARAMETERS"
    assert answer.json()["details"][0]["field"] == field
    assert _jobs_of(gateway, user) == 0


def test_other_endpoints_refuse_such_text_too(gateway: Gateway) -> None:
    user = gateway.user()
    job = create_job(
        gateway.sessions, JobRequest(user_id=user, job_type="sdxl_image_fast", prompt="a bay")
    ).job
    bodies = {
        "/enhance-prompt": '{"prompt": %s, "jobType": "sdxl_image_fast"}',
        "/playground-chat": '{"message": %s}',
    }
    for path, template in bodies.items():
        headers = {**gateway.headers(user), "content-type": "application/json"}
        answer = httpx.post(f"{gateway.url}{path}", content=(template % SURROGATE).encode(), headers=headers)
        assert (answer.status_code, answer.json()["code"]) == (400, "INVALID_PARAMETERS"), (path, answer.text)
    callback = f'{{"jobId": "{job.id}", "status": "failed", "errorMessage": {SURROGATE}}}'.encode()
    answer = gateway.callback(callback)
    assert (answer.status_code, answer.json()["code"]) == (400, "INVALID_PARAMETERS"), answer.text
    with gateway.sessions() as session:
        assert session.get_one(Job, job.id).status == "queued"


def test_lists_and_nesting_are_bounded(gateway: Gateway) -> None:
    user = gateway.user()
    job = create_job(
        gateway.sessions, JobRequest(user_id=user, job_type="sdxl_image_fast", prompt="a dune")
    ).job
    urls = [f"{user}/{job.id}/{index}.png" for index in range(MAX_FILES + 1)]
    started = time.monotonic()
    answer = gateway.callback({"jobId": str(job.id), "status": "completed", "imageUrls": urls})
    assert (answer.status_code, answer.json()["code"]) == (400, "INVALID_PARAMETERS"), answer.text
    assert answer.json()["details"][0]["field"] == "imageUrls"
    assert time.monotonic() - started < 10  # an answer, not a hang
    two = {"jobId": str(job.id), "status": "completed", "imageUrls": urls[:2]}  # the job makes one
    answer = gateway.callback(two)
    assert (answer.status_code, answer.json()["details"]) == (400, {"field": "imageUrls"}), answer.text
    with gateway.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Image).where(Image.job_id == job.id)) == 1
        assert session.get_one(Job, job.id).status == "queued"
    presets = {"prompt": "x", "jobType": "sdxl_image_fast", "selectedPresets": ["p"] * 51}
    answer = httpx.post(f"{gateway.url}/enhance-prompt", json=presets, headers=gateway.headers(user))
    assert (answer.status_code, answer.json()["details"][0]["field"]) == (400, "selectedPresets"), answer.text
    deep: Any = "x"
    for _ in range(MAX_DEPTH):
        deep = {"d": deep}
    answer = _queue(gateway, user, {"jobType": "sdxl_image_fast", "prompt": "x", "metadata": deep})
    assert answer.status_code == 400 and "nested deeper" in answer.json()["details"][0]["message"], (
        answer.text
    )
    chat = httpx.post(
        f"{gateway.url}/playground-chat", json={"message": "x" * 20_001}, headers=gateway.headers()
    )
    assert chat.status_code == 400, chat.text
    assert _jobs_of(gateway, user) == 1


def test_realtime_sockets_are_let_go_when_their_clients_leave(gateway: Gateway) -> None:
    hub = gateway.app.state.gateway.events
    assert hub is not None
    wait_until(lambda: hub.subscribers == 0, timeout=30, what="no realtime client from earlier tests")
    ws = gateway.url.replace("http://", "ws://")
    token = gateway.token(gateway.user())
    for _ in range(10):
        sockets = [connect(f"{ws}/realtime?access_token={token}") for _ in range(10)]
        wait_until(lambda: hub.subscribers == 10, timeout=30, what="ten realtime clients connected")
        for socket in sockets:
            socket.close()
        wait_until(lambda: hub.subscribers == 0, timeout=30, what="every closed socket let go")


def test_keys_and_signatures_that_are_not_ascii_are_refused_not_a_500(gateway: Gateway) -> None:
    """A header byte outside ASCII (latin-1 on the wire) in a service key, a callback's bearer key or
    a legacy signature: refused with the error body like any wrong one."""
    odd = "clé".encode("latin-1")
    answers = [
        httpx.get(f"{gateway.url}/metrics", headers={"x-service-key": odd}, timeout=10),
        httpx.post(f"{gateway.url}/job-callback", content=b"{}", headers={"authorization": b"Bearer " + odd}),
        httpx.post(
            f"{gateway.url}/job-callback",
            content=b"{}",
            headers={"x-ourvidz-timestamp": str(int(time.time())).encode(), "x-ourvidz-signature": odd},
        ),
    ]
    for answer in answers:
        assert answer.status_code in (401, 403), (answer.request.url, answer.status_code, answer.text)
        assert set(answer.json()) == {"error", "code", "details", "timestamp"}
