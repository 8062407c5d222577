"""The gateway's job endpoints over real HTTP, with the real Prefect server and GPU worker behind it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterIdempotencyKey
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.db.models import Job, Project
from ourvidz.db.session import sessions_for
from ourvidz.jobs.create import ensure_profile
from ourvidz.policy import ContentTier
from tests.e2e.conftest import Orchestra, extra_gateway
from tests.peers import FakeChatWorker, SwitchableProxy

SMALL = {"width": 64, "height": 64, "steps": 2}


def _new_user(orchestra: Orchestra) -> uuid.UUID:
    user_id = uuid.uuid4()
    ensure_profile(orchestra.sessions, user_id)
    return user_id


def _post(
    orchestra: Orchestra, path: str, body: Any, user: uuid.UUID | None = None, **kw: Any
) -> httpx.Response:
    headers = {**orchestra.headers(user), **kw.pop("headers", {})}
    return httpx.post(f"{orchestra.gateway_url}{path}", json=body, headers=headers, timeout=30, **kw)


def _wait_done(
    orchestra: Orchestra, job_id: str, user: uuid.UUID | None = None, timeout: float = 120
) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = httpx.get(
            f"{orchestra.gateway_url}/jobs/{job_id}", headers=orchestra.headers(user), timeout=30
        )
        assert status.status_code == 200, status.text
        if status.json()["job"]["status"] in ("completed", "failed", "cancelled"):
            return status.json()
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not final after {timeout} s")


def test_queue_job_in_the_spec_shape_runs_to_completion(orchestra: Orchestra) -> None:
    user = _new_user(orchestra)
    body = {
        "jobType": "sdxl_image_fast",
        "metadata": {"prompt": "beautiful landscape", "quality": "fast", **SMALL},
    }
    answer = _post(orchestra, "/functions/v1/queue-job", body, user)
    assert answer.status_code == 201, answer.text
    queued = answer.json()
    assert queued["success"] is True and queued["modelVariant"] == "sdxl-1.0" and queued["queueLength"] >= 1
    assert queued["job"]["status"] == "queued" and queued["job"]["original_prompt"] == "beautiful landscape"
    assert queued["debug"]["userId"] == str(user) and queued["debug"]["hasPrompt"] is True
    assert queued["debug"]["workersOnline"] is True
    assert "prompt" not in queued["job"]["metadata"] and queued["job"]["metadata"]["quality"] == "fast"
    assert answer.headers["x-ratelimit-limit"] == "10" and answer.headers["x-ratelimit-remaining"] == "9"
    done = _wait_done(orchestra, queued["job"]["id"], user)
    assert done["job"]["status"] == "completed" and done["progress"] == 100 and done["error"] is None
    (image,) = done["assets"]
    assert image["type"] == "image" and (image["width"], image["height"]) == (64, 64)
    picture = httpx.get(f"{orchestra.gateway_url}{image['url']}", headers=orchestra.headers(user), timeout=30)
    assert picture.status_code == 200 and picture.content.startswith(b"\x89PNG")
    stranger = httpx.get(
        f"{orchestra.gateway_url}{image['url']}", headers=orchestra.headers(_new_user(orchestra))
    )
    assert stranger.status_code == 404


def test_snake_case_form_and_video_assets(orchestra: Orchestra) -> None:
    body = {"job_type": "wan_video_fast", "prompt": "a boat at dawn", "metadata": {**SMALL, "frames": 5}}
    answer = _post(orchestra, "/queue-job", body)
    assert answer.status_code == 201, answer.text
    job = answer.json()["job"]
    assert (job["job_type"], job["queue"], job["format"]) == ("video_fast", "wan", "video")
    assert job["video_id"] is not None and job["image_id"] is None
    done = _wait_done(orchestra, job["id"])
    assert [a["type"] for a in done["assets"]] == ["video", "thumbnail"]
    assert done["assets"][0]["frames"] == 5 and done["job"]["video_id"] == job["video_id"]


def test_idempotency_key_returns_the_same_job_and_one_flow_run(orchestra: Orchestra) -> None:
    key = f"click-{uuid.uuid4()}"
    body = {"jobType": "sdxl_image_fast", "metadata": {"prompt": "same click twice", **SMALL}}
    first = _post(orchestra, "/queue-job", body, headers={"idempotency-key": key})
    second = _post(orchestra, "/queue-job", body, headers={"idempotency-key": key})
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["job"]["id"] == second.json()["job"]["id"]
    assert second.json()["debug"]["idempotentReplay"] is True
    job_id = first.json()["job"]["id"]
    _wait_done(orchestra, job_id)
    with orchestra.client() as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(idempotency_key=FlowRunFilterIdempotencyKey(any_=[job_id]))
        )
    assert len(runs) == 1


def test_concurrent_retries_with_one_idempotency_key_make_one_job(orchestra: Orchestra) -> None:
    """Retries that race each other (a double click, a client retrying on a timeout) record one job."""
    user, key = _new_user(orchestra), f"click-{uuid.uuid4()}"
    body = {"jobType": "sdxl_image_fast", "metadata": {"prompt": "many clicks at once", **SMALL}}

    def click(_: int) -> httpx.Response:
        return _post(orchestra, "/queue-job", body, user, headers={"idempotency-key": key})

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(click, range(8)))
    assert sorted(answer.status_code for answer in answers) == [200] * 7 + [201], [a.text for a in answers]
    assert len({answer.json()["job"]["id"] for answer in answers}) == 1
    assert all(answer.json()["queueLength"] >= 1 for answer in answers)
    with orchestra.sessions() as session:
        rows = session.scalars(select(Job).where(Job.user_id == user, Job.idempotency_key == key)).all()
    assert len(rows) == 1


def _job(job_type: str = "image_fast", **fields: Any) -> dict[str, Any]:
    return {"jobType": job_type, "prompt": "x", **fields}


BAD_BODIES = {
    "unknown type": (_job("sdxl_video"), 400, "INVALID_JOB_TYPE"),
    "no prompt": ({"jobType": "sdxl_image_fast"}, 400, "MISSING_PROMPT"),
    "blank prompt": (_job(prompt="   "), 400, "MISSING_PROMPT"),
    "two images": (_job("sdxl_image_fast", num_images=2), 400, "INVALID_PARAMETERS"),
    "odd width": (_job("sdxl_image_fast", metadata={"width": 1001}), 400, "INVALID_PARAMETERS"),
    "bad bucket": (_job(metadata={"bucket": "../x"}), 400, "INVALID_PARAMETERS"),
    "big metadata": (_job(metadata={"n": "x" * 20_000}), 400, "METADATA_TOO_LARGE"),
    "unknown field": (_job(colour="red"), 400, "INVALID_PARAMETERS"),
    "not a uuid": (_job(projectId="12"), 400, "INVALID_PARAMETERS"),
    "wrong type": ({"jobType": ["image_fast"], "prompt": "x"}, 400, "INVALID_PARAMETERS"),
    "someone's project": (_job(projectId="OTHER"), 404, "NOT_FOUND"),
    "NUL in the prompt": (_job(prompt="a\x00b"), 400, "INVALID_PARAMETERS"),
    "NUL in metadata": (_job(metadata={"style": ["ok", "a\x00b"]}), 400, "INVALID_PARAMETERS"),
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_bad_requests_get_the_spec_error_body(orchestra: Orchestra, case: str) -> None:
    body, status, code = BAD_BODIES[case]
    if body.get("projectId") == "OTHER":
        owner = _new_user(orchestra)
        with orchestra.sessions.begin() as session:
            project = Project(user_id=owner, title="theirs")
            session.add(project)
            session.flush()
            body = {**body, "projectId": str(project.id)}
    user = _new_user(orchestra)
    answer = _post(orchestra, "/queue-job", body, user)
    assert answer.status_code == status, answer.text
    error = answer.json()
    assert set(error) == {"error", "code", "details", "timestamp"} and error["code"] == code
    assert "pydantic" not in answer.text and "Traceback" not in answer.text
    with orchestra.sessions() as session:
        assert session.scalars(select(Job).where(Job.user_id == user)).all() == []


def test_malformed_and_oversized_bodies(orchestra: Orchestra) -> None:
    url, headers = (
        f"{orchestra.gateway_url}/queue-job",
        {**orchestra.headers(), "content-type": "application/json"},
    )
    broken = httpx.post(url, content=b'{"jobType": ', headers=headers)
    assert (broken.status_code, broken.json()["code"]) == (400, "INVALID_PARAMETERS")
    assert broken.json()["details"] == [{"field": "body", "message": "the body is not valid JSON"}]
    huge = httpx.post(url, content=b'{"prompt": "' + b"x" * 2_000_000 + b'"}', headers=headers)
    assert (huge.status_code, huge.json()["code"]) == (413, "PAYLOAD_TOO_LARGE")
    unknown = httpx.get(f"{orchestra.gateway_url}/no-such-endpoint", headers=headers)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "NOT_FOUND")
    wrong_method = httpx.get(url, headers=headers)
    assert (wrong_method.status_code, wrong_method.json()["code"]) == (405, "METHOD_NOT_ALLOWED")


def test_jobs_are_private_to_their_owner(orchestra: Orchestra) -> None:
    owner, other = _new_user(orchestra), _new_user(orchestra)
    answer = _post(
        orchestra, "/queue-job", {"jobType": "image_fast", "prompt": "mine", "metadata": SMALL}, owner
    )
    job_id = answer.json()["job"]["id"]
    for user in (other,):
        read = httpx.get(f"{orchestra.gateway_url}/jobs/{job_id}", headers=orchestra.headers(user))
        cancel = _post(orchestra, f"/jobs/{job_id}/cancel", None, user)
        missing = httpx.get(f"{orchestra.gateway_url}/jobs/{uuid.uuid4()}", headers=orchestra.headers(user))
        assert read.status_code == cancel.status_code == missing.status_code == 404
        assert read.json() | {"timestamp": None} == missing.json() | {
            "timestamp": None
        }  # nothing to tell apart
    admin = httpx.get(
        f"{orchestra.gateway_url}/jobs/{job_id}", headers=orchestra.headers(_new_user(orchestra), admin=True)
    )
    assert admin.status_code == 200 and admin.json()["job"]["user_id"] == str(owner)
    _wait_done(orchestra, job_id, owner)


def test_cancel_a_running_job_through_the_gateway(orchestra: Orchestra) -> None:
    answer = _post(orchestra, "/queue-job", {"jobType": "sdxl_image_fast", "prompt": "slow", "metadata":
                                             {"width": 256, "height": 256, "steps": 100}})  # fmt: skip
    job_id = answer.json()["job"]["id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = httpx.get(f"{orchestra.gateway_url}/jobs/{job_id}", headers=orchestra.headers()).json()
        if status["progress"] > 0:
            break
        time.sleep(0.1)
    cancel = _post(orchestra, f"/jobs/{job_id}/cancel", None)
    assert cancel.status_code == 202 and "next step" in cancel.json()["message"]
    done = _wait_done(orchestra, job_id)
    assert done["job"]["status"] == "cancelled" and done["progress"] < 95 and done["assets"] == []
    again = _post(orchestra, f"/jobs/{job_id}/cancel", None)
    assert (again.status_code, again.json()["code"]) == (409, "JOB_ALREADY_FINAL")


def test_rate_limit_is_exact_at_the_boundary(orchestra: Orchestra) -> None:
    user = _new_user(orchestra)
    body = {"prompt": "a boat", "jobType": "sdxl_image_fast"}
    answers = [_post(orchestra, "/enhance-prompt", body, user) for _ in range(31)]
    assert [a.status_code for a in answers] == [200] * 30 + [429]
    assert [a.headers["x-ratelimit-remaining"] for a in answers[:30]] == [str(29 - i) for i in range(30)]
    refused = answers[-1]
    assert refused.json()["code"] == "RATE_LIMITED" and int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-limit"] == "30" and refused.headers["x-ratelimit-remaining"] == "0"
    assert _post(orchestra, "/enhance-prompt", body).status_code == 200  # other users are not affected


def test_a_job_accepted_while_prefect_is_away_is_dispatched_when_it_returns(
    orchestra: Orchestra, private_database: str
) -> None:
    """A gateway whose Prefect is cut off (its own job database, so only its dispatcher can step in):
    the job is recorded and answered, waits without a flow run while the dispatcher's calls are
    refused, and gets its run once Prefect answers again."""
    proxy = SwitchableProxy("127.0.0.1", int(orchestra.api_url.rsplit(":", 1)[1].split("/")[0]))
    sessions = sessions_for(private_database)
    user = _new_user(orchestra)
    ensure_profile(sessions, user)
    with extra_gateway(orchestra, "gateway-prefect-away", proxy.url, private_database) as gateway:
        body = _job(prompt="later", metadata=SMALL)
        answer = httpx.post(f"{gateway}/queue-job", json=body, headers=orchestra.headers(user), timeout=30)
        assert answer.status_code == 201 and answer.json()["debug"]["workersOnline"] is None
        job_id = uuid.UUID(answer.json()["job"]["id"])
        refused_before = proxy.refused
        _wait_until(lambda: proxy.refused > refused_before + 2, timeout=30)  # the dispatcher kept trying
        with sessions() as session:
            assert session.get_one(Job, job_id).flow_run_id is None
        proxy.up = True
        _wait_until(lambda: _flow_run_of(sessions, job_id) is not None, timeout=60)
    with orchestra.client() as client:
        assert client.read_flow_run(_flow_run_of(sessions, job_id)).idempotency_key == str(job_id)


def _flow_run_of(sessions: sessionmaker[Session], job_id: uuid.UUID) -> uuid.UUID | None:
    with sessions() as session:
        return session.get_one(Job, job_id).flow_run_id


def _wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.1)


def test_content_policy_refuses_before_anything_is_recorded(orchestra: Orchestra) -> None:
    """Placeholder vocabulary: `zorblax` is a shipped explicit-tier term, `child` a minors term."""
    artistic, adult = _new_user(orchestra), uuid.uuid4()
    ensure_profile(orchestra.sessions, adult, tier=ContentTier.EXPLICIT, age_verified=True)
    job = {"jobType": "sdxl_image_fast", "prompt": "a zorblax at dusk", "metadata": SMALL}

    refused = _post(orchestra, "/queue-job", job, artistic)
    assert refused.status_code == 403 and refused.json()["code"] == "CONTENT_TIER_NOT_ALLOWED"
    assert refused.json()["details"] == {"requested": "explicit", "allowed": "artistic", "ageVerified": False}
    enhance = {"prompt": "a zorblax at dusk", "jobType": "sdxl_image_fast"}
    assert _post(orchestra, "/enhance-prompt", enhance, artistic).json()["code"] == "CONTENT_TIER_NOT_ALLOWED"
    accepted = _post(orchestra, "/queue-job", job, adult)
    assert accepted.status_code == 201, accepted.text

    prohibited = {**job, "prompt": "a zorblax with a child"}
    for caller in (orchestra.headers(adult), orchestra.headers(uuid.uuid4(), admin=True)):
        answer = _post(orchestra, "/queue-job", prohibited, headers=caller)
        assert answer.status_code == 403 and answer.json()["code"] == "CONTENT_PROHIBITED"
        assert answer.json()["details"]["category"] == "minors" and "zorblax" not in answer.text
    with orchestra.sessions() as session:
        assert session.scalars(select(Job).where(Job.user_id == artistic)).all() == []
        assert len(session.scalars(select(Job).where(Job.user_id == adult)).all()) == 1


def test_operator_vocabulary_is_picked_up_without_a_restart(orchestra: Orchestra) -> None:
    user = _new_user(orchestra)
    body = {"prompt": "a snorfwiggle in the rain", "jobType": "sdxl_image_fast"}
    assert _post(orchestra, "/enhance-prompt", body, user).status_code == 200
    vocabularies = orchestra.settings.vocabularies_dir
    assert vocabularies is not None
    vocabularies.mkdir(parents=True, exist_ok=True)
    (vocabularies / "explicit.txt").write_text("# test term\nsnorfwiggle\n")
    answer = _post(orchestra, "/enhance-prompt", body, user)
    assert answer.status_code == 403 and answer.json()["code"] == "CONTENT_TIER_NOT_ALLOWED"


def test_enhance_prompt_and_the_regression_check(orchestra: Orchestra) -> None:
    user = _new_user(orchestra)
    body = {"prompt": "a lighthouse at dusk, a lighthouse at dusk", "jobType": "sdxl_image_high"}
    answer = _post(orchestra, "/functions/v1/enhance-prompt", body, user)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["enhancement_strategy"] == "rules" and result["enhanced_prompt"].count("lighthouse") == 1
    metadata = result["enhancement_metadata"]
    assert metadata["token_count"] <= metadata["token_budget"] == 75 and metadata["is_sdxl"] is True
    assert result["optimization"]["token_count"] == metadata["token_count"]

    check = _post(orchestra, "/validate-enhancement-fix", None, headers=orchestra.headers(admin=True))
    assert check.status_code == 200 and check.json()["success"] is True, check.text
    cases = check.json()["details"]["cases"]
    assert len(cases) == 25 and all(case["passed"] and case["within_budget"] for case in cases)


def test_enhance_prompt_asks_the_registered_chat_worker_first(orchestra: Orchestra) -> None:
    user, chat = _new_user(orchestra), FakeChatWorker()
    assert orchestra.settings.service_key is not None
    service = {"x-service-key": orchestra.settings.service_key.get_secret_value()}
    body = {"prompt": "a lighthouse at dusk", "jobType": "image_fast"}
    try:
        assert (
            _post(orchestra, "/register-chat-worker", {"workerUrl": chat.url}, headers=service).status_code
            == 200
        )
        answer = _post(orchestra, "/enhance-prompt", body, user).json()
        assert (answer["enhancement_strategy"], answer["enhanced_prompt"]) == (
            "chat_worker",
            "echo: a lighthouse at dusk",
        )
        assert answer["enhancement_metadata"]["model_used"] == "chat_worker"
        chat.healthy = False
        answer = _post(orchestra, "/enhance-prompt", body, user).json()
        assert answer["enhancement_strategy"] == "rules_fallback"
        assert answer["enhanced_prompt"].startswith("a lighthouse at dusk")
    finally:
        chat.stop()
        orchestra.forget_chat_worker()
