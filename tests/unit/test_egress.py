"""The egress policy: which URLs a user or a registered worker may make this stack call, checked when
they are submitted and again, on the address actually connected to, when the request is made."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.config import Settings
from ourvidz.egress import EgressPolicy, EgressRefused, UrlNotAllowed, own_services, policies
from ourvidz.jobs.create import JobRequest, create_job, ensure_profile
from ourvidz.webhooks import MAX_RESPONSE_BYTES, WebhookFailed, WebhookSender, deliver, list_deliveries
from tests.peers import PEER_HOST, PEERS_ALLOWED, Receiver

SECRET = "whsec_" + "c2VjcmV0LWZvci13ZWJob29rLXRlc3RzLTMyYnl0ZXM="
GATEWAY, PREFECT = "127.0.0.1:8000", "127.0.0.1:4200"

# the addresses an attacker with a user account tried (issue 17), and their spellings
REFUSED = [
    "http://127.0.0.1/hook", "http://localhost:9000/", "http://127.1/", "http://2130706433/", "http://0x7f000001/",
    "http://0.0.0.0/", "http://[::]/", "http://169.254.169.254/latest/meta-data", "http://[::1]:8080/",
    "http://[::ffff:127.0.0.1]/", "http://[::ffff:7f00:1]/", "http://[64:ff9b::a9fe:a9fe]/",
    "http://10.1.2.3/", "http://172.16.0.1/", "http://192.168.1.1/", "http://100.64.0.1/",
    "http://[fe80::1]/", "http://[fd00::1]/", "http://224.0.0.1/", "http://255.255.255.255/",
    "http://198.18.0.1/", "http://no-such-host.invalid/", "ftp://example.com/", "file:///etc/passwd",
    "gopher://127.0.0.1:6379/", "http:///no-host", "http://127.0.0.1:99999/",
]  # fmt: skip


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.mark.parametrize("url", REFUSED)
def test_loopback_private_link_local_and_other_schemes_are_refused_by_default(url: str) -> None:
    with pytest.raises(UrlNotAllowed):
        EgressPolicy.of([], [GATEWAY, PREFECT]).check(url)


def test_public_addresses_are_allowed() -> None:
    assert EgressPolicy().check("https://8.8.8.8/hook") == ["8.8.8.8"]
    assert EgressPolicy().check("http://[2606:4700:4700::1111]:8080/") == ["2606:4700:4700::1111"]


def test_the_allowlist_takes_hosts_and_networks_but_never_the_stacks_own_services() -> None:
    names = {"hooks.internal": ["10.9.8.7"], "localhost": ["127.0.0.1"]}
    policy = EgressPolicy.of(["127.0.0.0/8", "hooks.internal"], [GATEWAY, PREFECT, "0.0.0.0:6379"],
                             resolver=lambda host, port: names[host])  # fmt: skip
    assert policy.check("http://127.0.0.1:9000/hook") == ["127.0.0.1"]
    assert policy.check("http://hooks.internal/hook") == ["10.9.8.7"]  # by name, not by its network
    for own in ("http://127.0.0.1:8000/metrics", "http://localhost:4200/api/flow_runs/filter",
                "http://127.0.0.1:6379/"):  # fmt: skip
        with pytest.raises(UrlNotAllowed, match="own services"):
            policy.check(own)
    with pytest.raises(UrlNotAllowed, match="private"):
        policy.check("http://10.9.8.7/")  # the network of an allowed name is not allowed by it


def test_a_processs_policies_know_its_own_services_and_the_worker_allowlist(tmp_path: object) -> None:
    settings = Settings(
        data_dir=tmp_path, database_url="postgresql://db.internal:6543/ourvidz", redis_url="redis://127.0.0.1:6390",
        api_port=8123, egress_allow=["192.168.7.0/24"], worker_egress_allow=["10.0.0.0/8"],
    )  # fmt: skip
    assert {"127.0.0.1:8123", "db.internal:6543", "127.0.0.1:6390"} <= set(own_services(settings))
    users, workers = policies(settings)
    assert users.check("http://192.168.7.9/") and workers.check("http://192.168.7.9/")
    assert workers.check("http://10.2.3.4:8000/")
    with pytest.raises(UrlNotAllowed):
        users.check("http://10.2.3.4:8000/")  # the workers' networks are not the users'
    with pytest.raises(UrlNotAllowed, match="own services"):
        workers.check("http://127.0.0.1:6390/")
    embedded = Settings(data_dir=tmp_path)
    assert policies(embedded)[1].check("http://127.0.0.1:9123/")  # the embedded stack's own workers
    with pytest.raises(UrlNotAllowed):
        policies(embedded)[0].check("http://127.0.0.1:9123/")  # but not a user's webhook
    assert Settings(data_dir=tmp_path, environment="production", jwt_secret="j", callback_secret="c",
                    webhook_secret=SECRET, service_key="s").worker_egress_allow == []  # fmt: skip


def test_the_client_connects_only_to_the_address_it_checked(receiver: Receiver) -> None:
    """DNS rebinding: the name resolved to a public address when the URL was accepted, and resolves to
    loopback by the time of the request; the request is refused and nothing reaches the receiver."""
    answers = iter([["93.184.216.34"], [PEER_HOST]])
    policy = EgressPolicy.of([], resolver=lambda host, port: next(answers))
    port = receiver.url.split(":")[2].split("/")[0]
    url = f"http://rebinding.test:{port}/hooks/ourvidz"
    assert policy.check(url) == ["93.184.216.34"]
    with policy.client() as client, pytest.raises(EgressRefused, match="loopback"):
        client.post(url, content=b"{}")
    assert receiver.requests == []
    with PEERS_ALLOWED.client() as client:
        assert client.post(receiver.url, content=b"{}").status_code == 200  # allowlisted: reached
    assert len(receiver.requests) == 1


def test_redirects_are_not_followed() -> None:
    target, redirecting = Receiver(), None
    try:
        redirecting = Receiver(status=307, answer_headers={"location": target.url})
        with PEERS_ALLOWED.client() as client:
            assert client.post(redirecting.url, content=b"{}").status_code == 307
        assert target.requests == []
    finally:
        target.close()
        if redirecting is not None:
            redirecting.close()


def _job(sessions: sessionmaker[Session]) -> uuid.UUID:
    user_id = uuid.uuid4()
    ensure_profile(sessions, user_id)
    return create_job(
        sessions, JobRequest(user_id=user_id, job_type="sdxl_image_fast", prompt="a pier")
    ).job.id


def test_a_webhook_to_a_refused_address_is_recorded_as_refused_and_never_sent(
    sessions: sessionmaker[Session], receiver: Receiver
) -> None:
    """Allowed when the job was accepted, refused at delivery (the operator narrowed the allowlist)."""
    job_id = _job(sessions)
    with pytest.raises(WebhookFailed, match="egress policy"):
        deliver(sessions, WebhookSender(SECRET), url=receiver.url, job_id=job_id, event_type="job.completed",
                payload={"job_id": str(job_id)})  # fmt: skip
    assert receiver.requests == []
    (history,) = list_deliveries(sessions, job_id=job_id)
    assert history.attempts[0].status_code is None and "loopback" in (history.attempts[0].error or "")


def test_a_receivers_answer_is_kept_as_a_short_excerpt(sessions: sessionmaker[Session]) -> None:
    receiver = Receiver(answer=b"x\x00" + b"y" * 5_000_000)  # NUL and 5 MB: neither reaches the database
    try:
        job_id = _job(sessions)
        sender = WebhookSender(SECRET, PEERS_ALLOWED)
        deliver(sessions, sender, url=receiver.url, job_id=job_id, event_type="job.completed", payload={})
        (history,) = list_deliveries(sessions, job_id=job_id)
        stored = history.attempts[0].response_body or ""
        assert stored.startswith("xy") and "\x00" not in stored and len(stored) <= MAX_RESPONSE_BYTES
    finally:
        receiver.close()


def test_a_refused_connection_is_an_httpx_error_callers_already_handle() -> None:
    assert issubclass(EgressRefused, httpx.HTTPError)
