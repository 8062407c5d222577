"""The callback stage: a job's webhook arrives signed, and a failing receiver gets retries."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prefect.client.schemas.objects import StateType
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from ourvidz.db.models import WebhookDelivery
from ourvidz.job_status import JobStatus
from tests.orchestration.conftest import Orchestra


class Receiver:
    """A webhook receiver on loopback that answers 500 to the first `failures` requests."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(500 if len(receiver.requests) <= receiver.failures else 200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/ourvidz"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver(failures=2)
    yield receiver
    receiver.server.shutdown()


def test_webhook_is_signed_and_retried_until_delivered(orchestra: Orchestra, receiver: Receiver) -> None:
    job_id = orchestra.submit(
        "sdxl_image_fast", metadata={"width": 64, "height": 64, "steps": 2}, webhook_url=receiver.url
    )
    job = orchestra.wait_final([job_id])[job_id]
    assert job.status is JobStatus.COMPLETED
    assert orchestra.wait_flow_run(job).state_type is StateType.COMPLETED
    assert orchestra.settings.webhook_secret is not None
    verifier = Webhook(orchestra.settings.webhook_secret.get_secret_value())
    assert len(receiver.requests) == 3  # two refusals, then accepted
    assert len({headers["webhook-id"] for headers, _ in receiver.requests}) == 1
    for headers, body in receiver.requests:
        payload = verifier.verify(body, headers)
        assert payload["job_id"] == str(job_id) and payload["status"] == "completed"
        assert [asset["type"] for asset in payload["assets"]] == ["image"]
    headers, body = receiver.requests[-1]
    with pytest.raises(WebhookVerificationError):
        verifier.verify(body.replace(b"completed", b"failed"), headers)
    with orchestra.sessions() as session:
        attempts = session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.job_id == job_id).order_by(WebhookDelivery.attempt)
        ).all()
    assert [(a.attempt, a.status_code, a.succeeded) for a in attempts] == [
        (1, 500, False),
        (2, 500, False),
        (3, 200, True),
    ]
    assert json.loads(body)["job_type"] == "sdxl_image_fast"
