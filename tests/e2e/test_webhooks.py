"""The callback stage and webhook redelivery: a job's webhook arrives signed; a receiver that refuses
briefly gets the flow's quick retries; a receiver that stays down does not hold the flow run, and the
deliver-webhooks flow brings it each webhook once when it is back; admins list and redeliver."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.objects import StateType
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from flows.maintenance.webhooks import ARTIFACT_KEY, deliver_webhooks
from ourvidz.db.models import WebhookDelivery
from ourvidz.job_status import JobStatus
from ourvidz.webhooks import backoff, webhook_id_for
from tests.e2e.conftest import Orchestra
from tests.peers import Receiver
from tests.waiting import wait_until

SMALL = {"width": 64, "height": 64, "steps": 2}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver(failures=2, refusal=500)
    yield receiver
    receiver.close()


@pytest.fixture
def down_receiver() -> Iterator[Receiver]:
    """Down (503) from the start until the test calls `recover()`; its outage is a constructor argument."""
    receiver = Receiver(outage_seconds=3600)
    yield receiver
    receiver.close()


def _verifier(orchestra: Orchestra) -> Webhook:
    assert orchestra.settings.webhook_secret is not None
    return Webhook(orchestra.settings.webhook_secret.get_secret_value())


def _attempts(orchestra: Orchestra, webhook_id: str, wait_for: int = 0) -> list[WebhookDelivery]:
    """The webhook's attempts (not its queued row, attempt 0), once there are `wait_for` of them: the
    flow's first attempts are made in the background, after its run may have ended."""
    query = select(WebhookDelivery).where(
        WebhookDelivery.webhook_id == webhook_id, WebhookDelivery.attempt > 0
    )
    found: list[WebhookDelivery] = []

    def enough() -> bool:
        with orchestra.sessions() as session:
            found[:] = session.scalars(query.order_by(WebhookDelivery.attempt))
        return len(found) >= wait_for

    wait_until(enough, timeout=60, what=f"{wait_for} attempts of {webhook_id}")
    return found


def _date_back(orchestra: Orchestra, webhook_ids: list[str], by: timedelta) -> None:
    """Move the attempts into the past, as if `by` had gone by since (instead of waiting for it)."""
    with orchestra.sessions.begin() as session:
        query = select(WebhookDelivery).where(WebhookDelivery.webhook_id.in_(webhook_ids))
        for row in session.scalars(query):
            row.created_at -= by


def test_webhook_is_signed_and_retried_until_delivered(orchestra: Orchestra, receiver: Receiver) -> None:
    job_id = orchestra.submit("sdxl_image_fast", metadata=SMALL, webhook_url=receiver.url)
    job = orchestra.wait_final([job_id])[job_id]
    assert job.status is JobStatus.COMPLETED
    assert orchestra.wait_flow_run(job).state_type is StateType.COMPLETED
    verifier = _verifier(orchestra)
    attempts = _attempts(orchestra, webhook_id_for(job_id, "job.completed"), wait_for=3)
    assert len(receiver.requests) == 3  # two refusals, then accepted (the flow's quick retries)
    assert len({request.headers["webhook-id"] for request in receiver.requests}) == 1
    for request in receiver.requests:
        payload = verifier.verify(request.body, request.headers)
        assert payload["job_id"] == str(job_id) and payload["status"] == "completed"
        assert [asset["type"] for asset in payload["assets"]] == ["image"]
    last = receiver.requests[-1]
    with pytest.raises(WebhookVerificationError):
        verifier.verify(last.body.replace(b"completed", b"failed"), last.headers)
    assert [(a.attempt, a.status_code, a.succeeded) for a in attempts] == [
        (1, 500, False),
        (2, 500, False),
        (3, 200, True),
    ]
    assert json.loads(last.body)["job_type"] == "sdxl_image_fast"


@pytest.mark.usefixtures("as_orchestra")
def test_a_receiver_outage_is_outlived_without_holding_the_flow_run(
    orchestra: Orchestra, down_receiver: Receiver
) -> None:
    receiver, verifier = down_receiver, _verifier(orchestra)
    job_ids = [
        orchestra.submit("sdxl_image_fast", metadata=SMALL, webhook_url=receiver.url) for _ in range(2)
    ]
    jobs = orchestra.wait_final(job_ids)
    webhook_ids = [webhook_id_for(job_id, "job.completed") for job_id in job_ids]
    for job, webhook_id in zip(jobs.values(), webhook_ids, strict=True):
        assert job.status is JobStatus.COMPLETED
        assert orchestra.wait_flow_run(job).state_type is StateType.COMPLETED
        attempts = _attempts(orchestra, webhook_id, wait_for=3)  # the first attempt and its quick retries
        assert [(a.status_code, a.succeeded) for a in attempts] == [(503, False)] * 3
        assert attempts[-1].created_at - attempts[0].created_at < timedelta(seconds=5)
    pending = _list(orchestra, status="pending")
    assert set(webhook_ids) <= {d["webhook_id"] for d in pending}
    assert all(d["next_attempt_at"] is not None for d in pending)

    assert asyncio.run(deliver_webhooks())["pending"] >= 2  # nothing of ours is due yet (20 s backoff)
    assert len(receiver.requests) == 6
    receiver.recover()
    _date_back(orchestra, webhook_ids, backoff(3))
    counts = asyncio.run(deliver_webhooks())
    assert counts["delivered"] >= 2
    assert asyncio.run(deliver_webhooks())["delivered"] == 0  # delivered ones are never sent again

    assert receiver.accepted() == Counter(dict.fromkeys(webhook_ids, 1))
    assert len(receiver.requests) == 8
    for request in receiver.requests:
        assert verifier.verify(request.body, request.headers)["status"] == "completed"
    last = receiver.requests[-1]
    with pytest.raises(WebhookVerificationError):
        verifier.verify(last.body.replace(b"completed", b"cancelled"), last.headers)
    with orchestra.client() as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[ARTIFACT_KEY]))
        )
    assert any(webhook_ids[0] in str(a.data) for a in artifacts)

    (listed,) = _list(orchestra, job_id=str(job_ids[0]))
    assert (listed["webhook_id"], listed["status"]) == (webhook_ids[0], "succeeded")
    assert listed["attempt_count"] == 4
    assert [a["status_code"] for a in listed["attempts"]] == [503, 503, 503, 200]
    assert listed["next_attempt_at"] is None and listed["payload"]["job_id"] == str(job_ids[0])


@pytest.mark.usefixtures("as_orchestra")
def test_a_slow_receiver_holds_no_flow_run_and_gets_its_webhook_once(orchestra: Orchestra) -> None:
    """A receiver that takes 6 s to answer: the job's flow run (and its GPU slot) ends without waiting
    for it, the attempt still gets its 2xx, and deliver-webhooks never sends the id again."""
    receiver = Receiver(delay_seconds=6)
    try:
        job_id = orchestra.submit("sdxl_image_fast", metadata=SMALL, webhook_url=receiver.url)
        job = orchestra.wait_final([job_id])[job_id]
        run = orchestra.wait_flow_run(job)
        assert run.state_type is StateType.COMPLETED and run.end_time is not None
        assert job.completed_at is not None and run.end_time - job.completed_at < timedelta(seconds=4)
        webhook_id = webhook_id_for(job_id, "job.completed")
        (attempt,) = _attempts(orchestra, webhook_id, wait_for=1)
        assert attempt.succeeded and attempt.created_at - job.completed_at >= timedelta(seconds=5)
        _date_back(orchestra, [webhook_id], backoff(3))
        asyncio.run(deliver_webhooks())
        assert receiver.accepted() == Counter({webhook_id: 1})
    finally:
        receiver.close()


def test_admins_list_and_redeliver_others_may_not(orchestra: Orchestra, receiver: Receiver) -> None:
    receiver.recover()
    job_id = orchestra.submit("sdxl_image_fast", metadata=SMALL, webhook_url=receiver.url)
    orchestra.wait_flow_run(orchestra.wait_final([job_id])[job_id])
    webhook_id = webhook_id_for(job_id, "job.completed")
    _attempts(orchestra, webhook_id, wait_for=1)  # the flow's, in the background
    url = f"{orchestra.gateway_url}/webhook-deliveries/{webhook_id}/redeliver"
    answer = httpx.post(url, headers=orchestra.headers(admin=True), timeout=30)
    assert answer.status_code == 200, answer.text
    attempt = answer.json()
    assert (attempt["webhook_id"], attempt["attempt"], attempt["succeeded"]) == (webhook_id, 2, True)
    assert receiver.accepted() == Counter({webhook_id: 2})  # an explicit redelivery, same webhook id
    _verifier(orchestra).verify(receiver.requests[-1].body, receiver.requests[-1].headers)
    (listed,) = _list(orchestra, webhook_id=webhook_id)
    assert [a["attempt"] for a in listed["attempts"]] == [1, 2] and listed["status"] == "succeeded"

    user = orchestra.headers(uuid.uuid4())
    listing = httpx.get(f"{orchestra.gateway_url}/webhook-deliveries", headers=user, timeout=30)
    assert listing.status_code == 403 and listing.json()["code"] == "FORBIDDEN"
    assert httpx.post(url, headers=user, timeout=30).status_code == 403
    assert httpx.post(url, timeout=30).status_code == 401
    unknown = httpx.post(
        f"{orchestra.gateway_url}/webhook-deliveries/msg_unknown/redeliver",
        headers=orchestra.headers(admin=True), timeout=30,
    )  # fmt: skip
    assert unknown.status_code == 404
    assert set(unknown.json()) == {"error", "code", "details", "timestamp"}
    assert unknown.json()["code"] == "NOT_FOUND"
    wrong = httpx.get(
        f"{orchestra.gateway_url}/webhook-deliveries", params={"status": "lost", "limit": 501},
        headers=orchestra.headers(admin=True), timeout=30,
    )  # fmt: skip
    assert wrong.status_code == 400 and wrong.json()["code"] == "INVALID_PARAMETERS"
    with orchestra.sessions() as session:
        rows = sa.select(sa.func.count()).where(WebhookDelivery.webhook_id == webhook_id)
        assert session.scalar(rows) == 3  # queued with the ending, the flow's attempt, the redelivery


def _list(orchestra: Orchestra, **params: str) -> list[dict]:
    answer = httpx.get(
        f"{orchestra.gateway_url}/webhook-deliveries", params=params, headers=orchestra.headers(admin=True),
        timeout=30,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["count"] == len(body["deliveries"])
    return body["deliveries"]
