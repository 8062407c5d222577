"""Moves made through the gateway are announced like any other: a queued job it cancels, and the
processing / completed / failed reports of workers outside Prefect, each reach the owner's realtime
WebSocket once (through the real Prefect server's event stream) and the job's webhook receiver once.
The gateway's own dispatcher gives a recorded job its flow run."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from ourvidz.db.models import Image, UsageLog, WebhookDelivery
from ourvidz.webhooks import webhook_id_for
from tests.gateway.conftest import Gateway
from tests.peers import Receiver

SMALL = {"width": 64, "height": 64, "steps": 2}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


def _socket(gateway: Gateway, user: uuid.UUID) -> ClientConnection:
    ws = gateway.url.replace("http://", "ws://")
    return connect(f"{ws}/realtime?access_token={gateway.token(user)}")


def _next(socket: ClientConnection, job_id: str, status: str) -> list[dict[str, Any]]:
    """Updates until the job's `status` one; every one received on the way."""
    seen = []
    while True:
        update = json.loads(socket.recv(timeout=30))
        seen.append(update)
        if (update["jobId"], update["status"]) == (job_id, status):
            return seen


def _queue(gateway: Gateway, user: uuid.UUID, receiver: Receiver, **body: Any) -> dict[str, Any]:
    job = {"jobType": "sdxl_image_fast", "prompt": "a lighthouse", "metadata": SMALL,
           "webhookUrl": receiver.url, **body}  # fmt: skip
    answer = httpx.post(f"{gateway.url}/queue-job", json=job, headers=gateway.headers(user), timeout=30)
    assert answer.status_code == 201, answer.text
    return answer.json()["job"]


def _webhooks(gateway: Gateway, receiver: Receiver, job_id: str, status: str) -> list[dict[str, Any]]:
    """The signed webhooks of the job's `status` the receiver got (its first attempt is made in the
    background, after the gateway answered: waited for by its record)."""
    webhook_id = webhook_id_for(uuid.UUID(job_id), f"job.{status}")
    deadline = time.monotonic() + 30
    while True:
        with gateway.sessions() as session:
            attempted = (WebhookDelivery.webhook_id == webhook_id, WebhookDelivery.attempt > 0)  # 0: queued
            if session.scalar(select(WebhookDelivery.id).where(*attempted)):
                break
        assert time.monotonic() < deadline, "no webhook attempt was recorded"
        time.sleep(0.05)
    assert gateway.settings.webhook_secret is not None
    verifier = Webhook(gateway.settings.webhook_secret.get_secret_value())
    return [
        verifier.verify(r.body, r.headers) for r in receiver.requests if r.headers["webhook-id"] == webhook_id
    ]


def _sentinel(gateway: Gateway, user: uuid.UUID, socket: ClientConnection, receiver: Receiver) -> list[dict]:
    """Queue and cancel one more job; the updates received until its cancellation arrives."""
    job = _queue(gateway, user, receiver)
    assert (
        httpx.post(f"{gateway.url}/jobs/{job['id']}/cancel", headers=gateway.headers(user)).status_code == 202
    )
    return _next(socket, job["id"], "cancelled")


def test_a_queued_job_cancelled_through_the_gateway(gateway: Gateway, receiver: Receiver) -> None:
    user = gateway.user()
    with _socket(gateway, user) as socket:
        job = _queue(gateway, user, receiver)
        run_id = gateway.flow_run_of(job["id"])
        answer = httpx.post(f"{gateway.url}/jobs/{job['id']}/cancel", headers=gateway.headers(user))
        assert answer.status_code == 202 and answer.json()["job"]["status"] == "cancelled"
        updates = _next(socket, job["id"], "cancelled")
        updates += _sentinel(gateway, user, socket, receiver)
    assert [u["status"] for u in updates if u["jobId"] == job["id"]] == ["cancelled"]
    assert [w["status"] for w in _webhooks(gateway, receiver, job["id"], "cancelled")] == ["cancelled"]
    again = httpx.post(f"{gateway.url}/jobs/{job['id']}/cancel", headers=gateway.headers(user))
    assert (again.status_code, again.json()["code"]) == (409, "JOB_ALREADY_FINAL")

    async def run_state() -> str:
        async with get_client() as client:
            return (await client.read_flow_run(run_id)).state.type.value

    assert asyncio.run(run_state()) == "CANCELLED"  # the run will never start


def test_worker_reports_move_and_end_a_job(gateway: Gateway, receiver: Receiver) -> None:
    user = gateway.user()
    with _socket(gateway, user) as socket:
        job = _queue(gateway, user, receiver, metadata={**SMALL, "num_images": 3})
        assert gateway.callback({"jobId": job["id"], "status": "processing"}).status_code == 200
        processing = _next(socket, job["id"], "processing")
        paths = [f"{user}/{job['id']}/{n}.png" for n in range(3)]
        done = gateway.callback({"jobId": job["id"], "status": "completed", "imageUrls": paths})
        assert done.status_code == 200 and done.json()["job"]["status"] == "completed"
        completed = _next(socket, job["id"], "completed")
        later = _sentinel(gateway, user, socket, receiver)
    assert [u["status"] for u in processing + completed + later if u["jobId"] == job["id"]] == [
        "processing", "completed",
    ]  # fmt: skip
    assert [a["key"] for a in completed[-1]["result"]["metadata"]["assets"]] == paths
    (webhook,) = _webhooks(gateway, receiver, job["id"], "completed")
    assert [a["key"] for a in webhook["assets"]] == paths
    with gateway.sessions() as session:
        images = session.scalars(select(Image).where(Image.job_id == uuid.UUID(job["id"]))).all()
        credits = session.scalar(
            select(UsageLog.credits_consumed).where(UsageLog.job_id == uuid.UUID(job["id"]))
        )
    assert sorted(i.storage_key for i in images) == paths and credits == 3
    status = httpx.get(f"{gateway.url}/jobs/{job['id']}", headers=gateway.headers(user)).json()
    assert [a["key"] for a in status["assets"]] == paths


def test_a_failure_reported_by_a_worker(gateway: Gateway, receiver: Receiver) -> None:
    user = gateway.user()
    with _socket(gateway, user) as socket:
        job = _queue(gateway, user, receiver)
        report = {"job_id": job["id"], "status": "failed", "error_message": "CUDA out of memory"}
        assert gateway.callback(report).status_code == 200
        failed = _next(socket, job["id"], "failed")[-1]
        later = _sentinel(gateway, user, socket, receiver)
    assert (failed["error"], failed["errorCode"]) == ("CUDA out of memory", "WORKER_FAILED")
    assert not [u for u in later if u["jobId"] == job["id"]]
    (webhook,) = _webhooks(gateway, receiver, job["id"], "failed")
    assert (webhook["error"], webhook["error_code"]) == ("CUDA out of memory", "WORKER_FAILED")
    record = httpx.get(f"{gateway.url}/jobs/{job['id']}", headers=gateway.headers(user)).json()["job"]
    assert (record["status"], record["error_code"], record["error_message"]) == (
        "failed", "WORKER_FAILED", "CUDA out of memory"
    )  # fmt: skip


def test_nobody_else_sees_a_users_jobs_and_a_bad_token_is_refused(
    gateway: Gateway, receiver: Receiver
) -> None:
    owner, other = gateway.user(), gateway.user()
    with _socket(gateway, owner) as mine, _socket(gateway, other) as theirs:
        job = _queue(gateway, owner, receiver)
        httpx.post(f"{gateway.url}/jobs/{job['id']}/cancel", headers=gateway.headers(owner))
        _next(mine, job["id"], "cancelled")
        seen_by_other = _sentinel(gateway, other, theirs, receiver)  # the other user's own job arrives...
    assert {u["jobId"] for u in seen_by_other} == {seen_by_other[-1]["jobId"]}  # ...and nothing of owner's
    ws = gateway.url.replace("http://", "ws://")
    with pytest.raises(ConnectionClosed) as closed, connect(f"{ws}/realtime?access_token=bad") as refused:
        refused.recv(timeout=5)
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4401, "INVALID_TOKEN")
