"""The gateway's job endpoints over real HTTP (the gateway in process, a real Prefect server): what
they accept and refuse, idempotency, privacy, rate limits, the content policy and enhancement."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterIdempotencyKey
from sqlalchemy import select

from ourvidz.db.models import Job, Project
from ourvidz.jobs.create import ensure_profile
from ourvidz.policy import ContentTier
from tests.gateway.conftest import Gateway
from tests.peers import FakeChatWorker

SMALL = {"width": 64, "height": 64, "steps": 2}


def _new_user(gateway: Gateway) -> uuid.UUID:
    user_id = uuid.uuid4()
    ensure_profile(gateway.sessions, user_id)
    return user_id


def _post(gateway: Gateway, path: str, body: Any, user: uuid.UUID | None = None, **kw: Any) -> httpx.Response:
    headers = {**gateway.headers(user), **kw.pop("headers", {})}
    return httpx.post(f"{gateway.url}{path}", json=body, headers=headers, timeout=30, **kw)


def test_idempotency_key_returns_the_same_job_and_one_flow_run(gateway: Gateway) -> None:
    key = f"click-{uuid.uuid4()}"
    body = {"jobType": "sdxl_image_fast", "metadata": {"prompt": "same click twice", **SMALL}}
    first = _post(gateway, "/queue-job", body, headers={"idempotency-key": key})
    second = _post(gateway, "/queue-job", body, headers={"idempotency-key": key})
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["job"]["id"] == second.json()["job"]["id"]
    assert second.json()["debug"]["idempotentReplay"] is True
    job_id = first.json()["job"]["id"]
    run_id = gateway.flow_run_of(job_id)  # given by the gateway's dispatcher

    async def runs_with_the_key() -> list[uuid.UUID]:
        async with get_client() as client:
            keyed = FlowRunFilter(idempotency_key=FlowRunFilterIdempotencyKey(any_=[job_id]))
            return [run.id for run in await client.read_flow_runs(flow_run_filter=keyed)]

    assert asyncio.run(runs_with_the_key()) == [run_id]


def test_concurrent_retries_with_one_idempotency_key_make_one_job(gateway: Gateway) -> None:
    """Retries that race each other (a double click, a client retrying on a timeout) record one job."""
    user, key = _new_user(gateway), f"click-{uuid.uuid4()}"
    body = {"jobType": "sdxl_image_fast", "metadata": {"prompt": "many clicks at once", **SMALL}}

    def click(_: int) -> httpx.Response:
        return _post(gateway, "/queue-job", body, user, headers={"idempotency-key": key})

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(click, range(8)))
    assert sorted(answer.status_code for answer in answers) == [200] * 7 + [201], [a.text for a in answers]
    assert len({answer.json()["job"]["id"] for answer in answers}) == 1
    assert all(answer.json()["queueLength"] >= 1 for answer in answers)
    with gateway.sessions() as session:
        rows = session.scalars(select(Job).where(Job.user_id == user, Job.idempotency_key == key)).all()
    assert len(rows) == 1


def _job(job_type: str = "image_fast", **fields: Any) -> dict[str, Any]:
    return {"jobType": job_type, "prompt": "x", **fields}


BAD_BODIES = {
    "unknown type": (_job("sdxl_video"), 400, "INVALID_JOB_TYPE"),
    "no prompt": ({"jobType": "sdxl_image_fast"}, 400, "MISSING_PROMPT"),
    "blank prompt": (_job(prompt="   "), 400, "MISSING_PROMPT"),
    "images not a number": (
        _job("sdxl_image_fast", metadata={"num_images": "two"}),
        400,
        "INVALID_PARAMETERS",
    ),
    "steps out of range": (_job("sdxl_image_fast", steps=500), 400, "INVALID_PARAMETERS"),
    "guidance out of range": (_job("sdxl_image_fast", guidance_scale=-1), 400, "INVALID_PARAMETERS"),
    "unknown quality": (_job("sdxl_image_fast", quality="ultra"), 400, "INVALID_PARAMETERS"),
    "bad aspect ratio": (
        _job("sdxl_image_fast", metadata={"aspect_ratio": "wide"}),
        400,
        "INVALID_PARAMETERS",
    ),
    "bad resolution": (_job("sdxl_image_fast", metadata={"resolution": "big"}), 400, "INVALID_PARAMETERS"),
    "no job type": ({"prompt": "x"}, 400, "INVALID_PARAMETERS"),
    "odd width": (_job("sdxl_image_fast", metadata={"width": 1001}), 400, "INVALID_PARAMETERS"),
    "seed not a number": (_job("sdxl_image_fast", metadata={"seed": "12"}), 400, "INVALID_PARAMETERS"),
    "bad bucket": (_job(metadata={"bucket": "../x"}), 400, "INVALID_PARAMETERS"),
    "big metadata": (_job(metadata={"n": "x" * 20_000}), 400, "METADATA_TOO_LARGE"),
    "not a uuid": (_job(projectId="12"), 400, "INVALID_PARAMETERS"),
    "wrong type": ({"jobType": ["image_fast"], "prompt": "x"}, 400, "INVALID_PARAMETERS"),
    "someone's project": (_job(projectId="OTHER"), 404, "NOT_FOUND"),
    "NUL in the prompt": (_job(prompt="a\x00b"), 400, "INVALID_PARAMETERS"),
    "NUL in metadata": (_job(metadata={"style": ["ok", "a\x00b"]}), 400, "INVALID_PARAMETERS"),
}


# The field each of these errors names in its details.
NAMED_FIELDS = {
    "images not a number": "num_images", "steps out of range": "steps",
    "guidance out of range": "guidance_scale", "unknown quality": "quality",
    "bad aspect ratio": "aspect_ratio", "bad resolution": "resolution", "no job type": "jobType",
    "odd width": "width", "not a uuid": "projectId", "seed not a number": "seed",
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_bad_requests_get_the_spec_error_body(gateway: Gateway, case: str) -> None:
    body, status, code = BAD_BODIES[case]
    if body.get("projectId") == "OTHER":
        owner = _new_user(gateway)
        with gateway.sessions.begin() as session:
            project = Project(user_id=owner, title="theirs")
            session.add(project)
            session.flush()
            body = {**body, "projectId": str(project.id)}
    user = _new_user(gateway)
    answer = _post(gateway, "/queue-job", body, user)
    assert answer.status_code == status, answer.text
    error = answer.json()
    assert set(error) == {"error", "code", "details", "timestamp"} and error["code"] == code
    assert "pydantic" not in answer.text and "Traceback" not in answer.text
    if case in NAMED_FIELDS:
        assert f'"field": "{NAMED_FIELDS[case]}"' in json.dumps(error["details"]), error
    with gateway.sessions() as session:
        assert session.scalars(select(Job).where(Job.user_id == user)).all() == []


def test_malformed_and_oversized_bodies(gateway: Gateway) -> None:
    url, headers = (
        f"{gateway.url}/queue-job",
        {**gateway.headers(), "content-type": "application/json"},
    )
    broken = httpx.post(url, content=b'{"jobType": ', headers=headers)
    assert (broken.status_code, broken.json()["code"]) == (400, "INVALID_PARAMETERS")
    assert broken.json()["details"] == [{"field": "body", "message": "the body is not valid JSON"}]
    huge = httpx.post(url, content=b'{"prompt": "' + b"x" * 2_000_000 + b'"}', headers=headers)
    assert (huge.status_code, huge.json()["code"]) == (413, "PAYLOAD_TOO_LARGE")

    def chunked(*parts: bytes) -> Iterator[bytes]:  # a generator body: sent without a Content-Length
        yield from parts

    huge_chunked = httpx.post(
        url, content=chunked(b'{"prompt": "', *[b"x" * 100_000] * 25, b'"}'), headers=headers
    )
    assert (huge_chunked.status_code, huge_chunked.json()["code"]) == (413, "PAYLOAD_TOO_LARGE")
    broken_chunked = httpx.post(
        url, content=chunked(b'{"job', b'Type": '), headers=headers
    )  # reaches the route
    assert broken_chunked.json()["details"] == [{"field": "body", "message": "the body is not valid JSON"}]
    unknown = httpx.get(f"{gateway.url}/no-such-endpoint", headers=headers)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "NOT_FOUND")
    wrong_method = httpx.get(url, headers=headers)
    assert (wrong_method.status_code, wrong_method.json()["code"]) == (405, "METHOD_NOT_ALLOWED")


def test_jobs_are_private_to_their_owner(gateway: Gateway) -> None:
    owner, other = _new_user(gateway), _new_user(gateway)
    answer = _post(
        gateway, "/queue-job", {"jobType": "image_fast", "prompt": "mine", "metadata": SMALL}, owner
    )
    job_id = answer.json()["job"]["id"]
    for user in (other,):
        read = httpx.get(f"{gateway.url}/jobs/{job_id}", headers=gateway.headers(user))
        cancel = _post(gateway, f"/jobs/{job_id}/cancel", None, user)
        missing = httpx.get(f"{gateway.url}/jobs/{uuid.uuid4()}", headers=gateway.headers(user))
        assert read.status_code == cancel.status_code == missing.status_code == 404
        assert read.json() | {"timestamp": None} == missing.json() | {
            "timestamp": None
        }  # nothing to tell apart
    admin = httpx.get(f"{gateway.url}/jobs/{job_id}", headers=gateway.headers(_new_user(gateway), admin=True))
    assert admin.status_code == 200 and admin.json()["job"]["user_id"] == str(owner)


def test_rate_limit_is_exact_at_the_boundary(gateway: Gateway) -> None:
    user = _new_user(gateway)
    body = {"prompt": "a boat", "jobType": "sdxl_image_fast"}
    answers = [_post(gateway, "/enhance-prompt", body, user) for _ in range(31)]
    assert [a.status_code for a in answers] == [200] * 30 + [429]
    assert [a.headers["x-ratelimit-remaining"] for a in answers[:30]] == [str(29 - i) for i in range(30)]
    refused = answers[-1]
    assert refused.json()["code"] == "RATE_LIMITED" and int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-limit"] == "30" and refused.headers["x-ratelimit-remaining"] == "0"
    assert _post(gateway, "/enhance-prompt", body).status_code == 200  # other users are not affected


def test_content_policy_refuses_before_anything_is_recorded(gateway: Gateway) -> None:
    """Placeholder vocabulary: `zorblax` is a shipped explicit-tier term, `child` a minors term."""
    artistic, adult = _new_user(gateway), uuid.uuid4()
    ensure_profile(gateway.sessions, adult, tier=ContentTier.EXPLICIT, age_verified=True)
    job = {"jobType": "sdxl_image_fast", "prompt": "a zorblax at dusk", "metadata": SMALL}

    refused = _post(gateway, "/queue-job", job, artistic)
    assert refused.status_code == 403 and refused.json()["code"] == "CONTENT_TIER_NOT_ALLOWED"
    assert refused.json()["details"] == {"requested": "explicit", "allowed": "artistic", "ageVerified": False}
    enhance = {"prompt": "a zorblax at dusk", "jobType": "sdxl_image_fast"}
    assert _post(gateway, "/enhance-prompt", enhance, artistic).json()["code"] == "CONTENT_TIER_NOT_ALLOWED"
    accepted = _post(gateway, "/queue-job", job, adult)
    assert accepted.status_code == 201, accepted.text

    prohibited = {**job, "prompt": "a zorblax with a child"}
    for caller in (gateway.headers(adult), gateway.headers(uuid.uuid4(), admin=True)):
        answer = _post(gateway, "/queue-job", prohibited, headers=caller)
        assert answer.status_code == 403 and answer.json()["code"] == "CONTENT_PROHIBITED"
        assert answer.json()["details"]["category"] == "minors" and "zorblax" not in answer.text
    with gateway.sessions() as session:
        assert session.scalars(select(Job).where(Job.user_id == artistic)).all() == []
        assert len(session.scalars(select(Job).where(Job.user_id == adult)).all()) == 1


def test_operator_vocabulary_is_picked_up_without_a_restart(gateway: Gateway) -> None:
    user = _new_user(gateway)
    body = {"prompt": "a snorfwiggle in the rain", "jobType": "sdxl_image_fast"}
    assert _post(gateway, "/enhance-prompt", body, user).status_code == 200
    vocabularies = gateway.settings.vocabularies_dir
    assert vocabularies is not None
    vocabularies.mkdir(parents=True, exist_ok=True)
    (vocabularies / "explicit.txt").write_text("# test term\nsnorfwiggle\n")
    answer = _post(gateway, "/enhance-prompt", body, user)
    assert answer.status_code == 403 and answer.json()["code"] == "CONTENT_TIER_NOT_ALLOWED"


def test_enhance_prompt_and_the_regression_check(gateway: Gateway) -> None:
    user = _new_user(gateway)
    body = {"prompt": "a lighthouse at dusk, a lighthouse at dusk", "jobType": "sdxl_image_high"}
    answer = _post(gateway, "/functions/v1/enhance-prompt", body, user)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["enhancement_strategy"] == "rules" and result["enhanced_prompt"].count("lighthouse") == 1
    metadata = result["enhancement_metadata"]
    assert metadata["token_count"] <= metadata["token_budget"] == 75 and metadata["is_sdxl"] is True
    assert result["optimization"]["token_count"] == metadata["token_count"]

    check = _post(gateway, "/validate-enhancement-fix", None, headers=gateway.headers(admin=True))
    assert check.status_code == 200 and check.json()["success"] is True, check.text
    cases = check.json()["details"]["cases"]
    assert len(cases) == 25 and all(case["passed"] and case["within_budget"] for case in cases)


def test_enhance_prompt_asks_the_registered_chat_worker_first(gateway: Gateway) -> None:
    user, chat = _new_user(gateway), FakeChatWorker()
    assert gateway.settings.service_key is not None
    service = {"x-service-key": gateway.settings.service_key.get_secret_value()}
    body = {"prompt": "a lighthouse at dusk", "jobType": "image_fast"}
    try:
        assert (
            _post(gateway, "/register-chat-worker", {"workerUrl": chat.url}, headers=service).status_code
            == 200
        )
        answer = _post(gateway, "/enhance-prompt", body, user).json()
        assert (answer["enhancement_strategy"], answer["enhanced_prompt"]) == (
            "chat_worker",
            "echo: a lighthouse at dusk",
        )
        assert answer["enhancement_metadata"]["model_used"] == "chat_worker"
        chat.healthy = False
        answer = _post(gateway, "/enhance-prompt", body, user).json()
        assert answer["enhancement_strategy"] == "rules_fallback"
        assert answer["enhanced_prompt"].startswith("a lighthouse at dusk")
    finally:
        chat.stop()
        gateway.forget_chat_worker()


def test_the_regression_check_passes_a_plausible_worker_and_names_what_a_bad_one_fails(
    gateway: Gateway,
) -> None:
    chat, admin = FakeChatWorker(), gateway.headers(admin=True)
    chat.reply = lambda prompt: f"{prompt}, soft light, fine detail"  # an OpenAI-shaped worker that rewrites
    registration = {"workerUrl": chat.url, "protocol": "openai"}
    try:
        assert (
            _post(gateway, "/register-chat-worker", registration, headers=gateway.service()).status_code
            == 200
        )
        good = _post(gateway, "/validate-enhancement-fix", None, headers=admin).json()
        assert (good["success"], good["message"]) == (True, "25 of 25 cases passed"), good["message"]
        assert {case["enhancement_strategy"] for case in good["details"]["cases"]} == {"chat_worker"}

        chat.reply = "a photo of a cat"  # the same answer to every prompt
        bad = _post(gateway, "/validate-enhancement-fix", None, headers=admin).json()
        assert bad["success"] is False and "keeps_subject" in bad["message"], bad["message"]
        failed = [case for case in bad["details"]["cases"] if not case["passed"]]
        assert len(failed) == 25 and all(case["keeps_subject"] is False for case in failed)
        reason = failed[0]["failed"][0]
        assert reason["check"] == "keeps_subject" and "lighthouse" in reason["reason"], reason

        chat.healthy = False
        down = _post(gateway, "/validate-enhancement-fix", None, headers=admin).json()
        reasons = [f["reason"] for case in down["details"]["cases"] for f in case["failed"]]
        assert down["message"] == "0 of 25 cases passed; failed checks: chat_worker_answered (25)"
        assert "no usable answer" in reasons[0] and all("failed an earlier case" in r for r in reasons[1:])
    finally:
        chat.stop()
        gateway.forget_chat_worker()
