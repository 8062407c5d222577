"""Every way a job ends, each announced exactly once: the final row, one `ourvidz.job.<status>` event
received over the gateway's realtime WebSocket by the job's owner, and one signed webhook received by a
real HTTP receiver on loopback.

"Exactly once" is checked after a sentinel: once the scenario is over, the owner queues and cancels one
more job through the gateway, and its `cancelled` update is waited for; a second announcement of the
scenario's job, had one been made, would have been delivered by then. Prefect's own event store is read
as well.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
from prefect.states import Cancelling, Crashed, Scheduled
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook
from websockets.sync.client import ClientConnection, connect

from flows.maintenance.recovery import recover_jobs
from ourvidz.db.models import Image, Job, UsageLog, WebhookDelivery
from ourvidz.db.types import utcnow
from ourvidz.job_status import JobStatus
from ourvidz.jobs.create import JobRequest, create_job
from ourvidz.orchestration.names import deployment_name
from ourvidz.webhooks import webhook_id_for
from tests.e2e.conftest import Orchestra, signed_callback
from tests.peers import Receiver

pytestmark = pytest.mark.usefixtures("as_orchestra")
SMALL = {"width": 64, "height": 64, "steps": 2}
SLOW = {"width": 256, "height": 256, "steps": 100}
FINAL = ("completed", "failed", "cancelled")


class Owner:
    """A new user watching their jobs over the realtime WebSocket, with a webhook receiver."""

    def __init__(self, orchestra: Orchestra, receiver: Receiver) -> None:
        self.orchestra, self.receiver = orchestra, receiver
        self.user_id = uuid.uuid4()
        self.updates: list[dict[str, Any]] = []
        self._arrived = threading.Condition()
        ws = orchestra.gateway_url.replace("http://", "ws://")
        self._socket: ClientConnection = connect(
            f"{ws}/realtime?access_token={orchestra.token(self.user_id)}"
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for message in self._socket:
                with self._arrived:
                    self.updates.append(json.loads(message))
                    self._arrived.notify_all()
        except Exception:  # closed at the end of the test
            return

    def close(self) -> None:
        self._socket.close()
        self._reader.join(timeout=10)

    def headers(self) -> dict[str, str]:
        return self.orchestra.headers(self.user_id)

    def endings(self, job_id: uuid.UUID) -> list[str]:
        """The final statuses announced for the job, in order."""
        with self._arrived:
            return [u["status"] for u in self.updates if u["jobId"] == str(job_id) and u["status"] in FINAL]

    def wait_update(self, job_id: uuid.UUID, status: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                for update in self.updates:
                    if update["jobId"] == str(job_id) and update["status"] == status:
                        return update
                left = deadline - time.monotonic()
                assert left > 0, f"no {status} update of job {job_id}: {self.updates}"
                self._arrived.wait(left)

    def queue(self, body: dict[str, Any]) -> uuid.UUID:
        body = {"metadata": SMALL, "webhookUrl": self.receiver.url, **body}
        answer = httpx.post(
            f"{self.orchestra.gateway_url}/queue-job", json=body, headers=self.headers(), timeout=30
        )
        assert answer.status_code == 201, answer.text
        return uuid.UUID(answer.json()["job"]["id"])

    def record(self, **fields: Any) -> uuid.UUID:
        """A job recorded with a flow run of the test's making (`flow_run_id`), so no dispatcher runs it."""
        request = JobRequest(
            user_id=self.user_id, job_type="sdxl_image_fast", prompt="a lighthouse", metadata=SMALL,
            webhook_url=self.receiver.url, flow_run_id=uuid.uuid4(), **fields,
        )  # fmt: skip
        return create_job(self.orchestra.sessions, request, rules=self.orchestra.rules).job.id

    def ended_once(self, job_id: uuid.UUID, status: str) -> Job:
        """The job is final with `status`, announced once over realtime, in Prefect and by webhook."""
        self.wait_update(job_id, status)
        sentinel = self.queue({"jobType": "sdxl_image_fast", "prompt": "sentinel", "metadata": SLOW})
        cancelled = httpx.post(f"{self.orchestra.gateway_url}/jobs/{sentinel}/cancel", headers=self.headers())
        assert cancelled.status_code == 202, cancelled.text
        self.wait_update(sentinel, "cancelled")
        assert self.endings(job_id) == [status], self.updates
        assert _stored_events(job_id, f"ourvidz.job.{status}") == 1
        webhook_id = webhook_id_for(job_id, f"job.{status}")
        _wait(lambda: _delivered(self.orchestra, webhook_id), "the webhook's first attempt to be recorded")
        received = [r for r in self.receiver.requests if r.headers["webhook-id"] == webhook_id]
        assert len(received) == 1
        assert self.orchestra.settings.webhook_secret is not None
        payload = Webhook(self.orchestra.settings.webhook_secret.get_secret_value()).verify(
            received[0].body, received[0].headers
        )
        assert (payload["job_id"], payload["status"]) == (str(job_id), status)
        with self.orchestra.sessions() as session:
            job = session.get_one(Job, job_id)
        assert job.status == status and job.completed_at is not None
        return job


@pytest.fixture
def owner(orchestra: Orchestra) -> Iterator[Owner]:
    receiver = Receiver()
    watching = Owner(orchestra, receiver)
    yield watching
    watching.close()
    receiver.close()


def _delivered(orchestra: Orchestra, webhook_id: str) -> bool:
    with orchestra.sessions() as session:
        attempted = (WebhookDelivery.webhook_id == webhook_id, WebhookDelivery.attempt > 0)  # 0: queued
        return session.scalar(select(WebhookDelivery.id).where(*attempted)) is not None


def _wait(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _stored_events(job_id: uuid.UUID, name: str) -> int:
    """How many events `name` about the job Prefect keeps (written asynchronously: read until seen)."""

    async def count() -> int:
        async with get_client() as client:
            page = await client.read_events(
                EventFilter(
                    event=EventNameFilter(name=[name]),
                    resource=EventResourceFilter(id=[f"ourvidz.job.{job_id}"]),
                ),
                limit=10,
            )
        return len(page.events)

    deadline = time.monotonic() + 30
    while (found := asyncio.run(count())) == 0 and time.monotonic() < deadline:
        time.sleep(0.3)
    return found


def _run_for(orchestra: Orchestra, job_id: uuid.UUID, state: Any) -> uuid.UUID:
    """A flow run of the job's deployment in `state`, linked from the job as its run."""
    with orchestra.client() as client:
        deployment = client.read_deployment_by_name(deployment_name("sdxl"))
        run = client.create_flow_run_from_deployment(
            deployment.id, parameters={"job_id": str(job_id), "job_type": "sdxl_image_fast"}, state=state
        )
    with orchestra.sessions.begin() as session:
        session.get_one(Job, job_id).flow_run_id = run.id
    return run.id


def test_the_flow_completes_a_job(owner: Owner) -> None:
    job_id = owner.queue({"jobType": "sdxl_image_fast", "prompt": "a lighthouse"})
    job = owner.ended_once(job_id, "completed")
    assert job.progress == 100 and job.error_code is None
    assert owner.wait_update(job_id, "completed")["result"]["imageUrl"].startswith("/files/sdxl_image_fast/")
    with owner.orchestra.sessions() as session:
        assert session.scalar(select(UsageLog.credits_consumed).where(UsageLog.job_id == job_id)) == 1


def test_the_flow_fails_a_job(owner: Owner, orchestra: Orchestra) -> None:
    blocked = Path(orchestra.settings.storage_url.removeprefix("file://")) / "ending-blocked"
    blocked.mkdir(parents=True, exist_ok=True)
    (blocked / str(owner.user_id)).write_text("a file where a folder must go")
    job_id = owner.queue(
        {"jobType": "sdxl_image_fast", "prompt": "x", "metadata": {**SMALL, "bucket": "ending-blocked"}}
    )
    job = owner.ended_once(job_id, "failed")
    assert (
        job.error_code == "STORAGE_FAILED"
        and owner.wait_update(job_id, "failed")["errorCode"] == job.error_code
    )


def test_a_run_cancelled_in_prefect_while_generating_ends_its_job(owner: Owner, orchestra: Orchestra) -> None:
    job_id = owner.queue({"jobType": "sdxl_image_fast", "prompt": "slow", "metadata": SLOW})
    job = orchestra.wait_generating(job_id)
    with orchestra.client() as client:
        client.set_flow_run_state(job.flow_run_id, Cancelling(message="an operator stopped it"))
    job = owner.ended_once(job_id, "cancelled")
    assert 0 < job.progress < 95


def test_a_scheduled_run_cancelled_in_prefect_cancels_its_queued_job(
    owner: Owner, orchestra: Orchestra
) -> None:
    """No worker is involved: the run goes straight to Cancelled, and recovery (which the automation
    starts at once; here, run in process) cancels the job."""
    job_id = owner.record()
    later = utcnow() + timedelta(hours=1)  # due in an hour: no worker takes it meanwhile
    run_id = _run_for(orchestra, job_id, Scheduled(scheduled_time=later))
    with orchestra.client() as client:
        client.set_flow_run_state(run_id, Cancelling(message="an operator cancelled it"))
        assert client.read_flow_run(run_id).state.is_cancelled()
    assert [a["action"] for a in asyncio.run(recover_jobs()) if a["job_id"] == str(job_id)] == ["cancelled"]
    job = owner.ended_once(job_id, "cancelled")
    assert job.error_message == "its flow run was cancelled in Prefect"


def test_cancelling_a_queued_job_through_the_gateway(owner: Owner, orchestra: Orchestra) -> None:
    job_id = owner.record()
    run_id = _run_for(orchestra, job_id, Scheduled(scheduled_time=utcnow() + timedelta(hours=1)))
    answer = httpx.post(f"{orchestra.gateway_url}/jobs/{job_id}/cancel", headers=owner.headers())
    assert (answer.status_code, answer.json()["message"]) == (202, "job cancelled before it started")
    owner.ended_once(job_id, "cancelled")
    with orchestra.client() as client:
        assert client.read_flow_run(run_id).state.is_cancelled()  # and its run will not start
    with orchestra.sessions() as session:
        assert session.scalars(select(Image.status).where(Image.job_id == job_id)).all() == ["cancelled"]


def test_cancelling_a_running_job_through_the_gateway(owner: Owner, orchestra: Orchestra) -> None:
    job_id = owner.queue({"jobType": "sdxl_image_fast", "prompt": "slow", "metadata": SLOW})
    orchestra.wait_generating(job_id)
    answer = httpx.post(f"{orchestra.gateway_url}/jobs/{job_id}/cancel", headers=owner.headers())
    assert answer.status_code == 202 and "next step" in answer.json()["message"]
    owner.ended_once(job_id, "cancelled")


@pytest.mark.parametrize("status", ["completed", "failed"])
def test_a_worker_callback_ends_a_job(owner: Owner, orchestra: Orchestra, status: str) -> None:
    job_id = owner.record()
    processing = signed_callback(
        orchestra, orchestra.gateway_url, {"jobId": str(job_id), "status": "processing"}
    )
    assert processing.status_code == 200
    report: dict[str, Any] = {"jobId": str(job_id), "status": status}
    if status == "completed":
        report["imageUrls"] = [f"{owner.user_id}/{job_id}/0.png"]
    else:
        report["errorMessage"] = "the worker's GPU went away"
    answer = signed_callback(orchestra, orchestra.gateway_url, report)
    assert answer.status_code == 200, answer.text
    job = owner.ended_once(job_id, status)
    with orchestra.sessions() as session:
        charged = session.scalars(select(UsageLog.credits_consumed).where(UsageLog.job_id == job_id)).all()
    assert charged == ([1] if status == "completed" else []) and job.attempts == 1
    if status == "failed":
        assert (job.error_code, job.error_message) == ("WORKER_FAILED", "the worker's GPU went away")


def test_recovery_requeues_a_lost_job_which_then_completes_once(owner: Owner, orchestra: Orchestra) -> None:
    job_id = owner.record()
    crashed = _run_for(orchestra, job_id, Crashed())
    with orchestra.sessions.begin() as session:
        row = session.get_one(Job, job_id)
        row.status, row.attempts = JobStatus.PROCESSING, 1
    assert [a["action"] for a in asyncio.run(recover_jobs()) if a["job_id"] == str(job_id)] == ["requeued"]
    owner.wait_update(job_id, "queued")
    job = owner.ended_once(job_id, "completed")
    assert job.attempts == 2 and job.flow_run_id != crashed


def test_recovery_fails_a_job_out_of_attempts(owner: Owner, orchestra: Orchestra) -> None:
    job_id = owner.record()
    _run_for(orchestra, job_id, Crashed())
    with orchestra.sessions.begin() as session:
        row = session.get_one(Job, job_id)
        row.status, row.attempts = JobStatus.PROCESSING, row.max_attempts
    assert [a["action"] for a in asyncio.run(recover_jobs()) if a["job_id"] == str(job_id)] == ["failed"]
    job = owner.ended_once(job_id, "failed")
    assert job.error_code == "WORKER_LOST"


def test_a_generation_started_from_prefect_is_a_job_like_any_other(
    owner: Owner, orchestra: Orchestra
) -> None:
    """`prefect deployment run 'generate/sdxl' -p job_type=... -p prompt=...`, as the Python API does it."""
    parameters = {
        "job_type": "sdxl_image_fast", "prompt": "a lighthouse", "width": 64, "height": 64, "steps": 2,
        "seed": 7, "user_id": str(owner.user_id), "webhook_url": owner.receiver.url,
    }  # fmt: skip
    run = run_deployment(deployment_name("sdxl"), parameters=parameters, timeout=0, as_subflow=False)
    _wait(lambda: _job_of_run(orchestra, run.id) is not None, "the run to create its job")
    job_id = _job_of_run(orchestra, run.id)
    assert job_id is not None
    job = owner.ended_once(job_id, "completed")
    assert (job.user_id, job.idempotency_key) == (owner.user_id, f"flow-run:{run.id}")
    listed = httpx.get(f"{orchestra.gateway_url}/jobs/{job_id}", headers=owner.headers()).json()
    assert listed["job"]["status"] == "completed" and listed["assets"][0]["seed"] == 7
    finished = orchestra.wait_flow_run(job)
    assert finished.state_type.value == "COMPLETED" and finished.name == f"sdxl_image_fast-{job_id}"


def _job_of_run(orchestra: Orchestra, run_id: uuid.UUID) -> uuid.UUID | None:
    with orchestra.sessions() as session:
        return session.scalar(select(Job.id).where(Job.flow_run_id == run_id))
