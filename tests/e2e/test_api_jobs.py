"""The gateway's job endpoints over real HTTP, with the real Prefect server and GPU worker behind it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from ourvidz.db.models import Job
from ourvidz.db.session import sessions_for
from ourvidz.jobs.create import ensure_profile
from tests.e2e.conftest import Orchestra, extra_gateway
from tests.peers import SwitchableProxy
from tests.waiting import flow_run_of

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


def test_jobs_accepted_while_prefect_is_away_are_dispatched_within_5_s_of_its_return(
    orchestra: Orchestra, private_database: str
) -> None:
    """A gateway whose Prefect is cut off (its own job database, so only its dispatcher can step in):
    the jobs are recorded and answered, wait without a flow run while the dispatcher's calls are
    refused, and each has its run within 5 s of Prefect answering again."""
    proxy = SwitchableProxy("127.0.0.1", int(orchestra.api_url.rsplit(":", 1)[1].split("/")[0]))
    sessions = sessions_for(private_database)
    user = _new_user(orchestra)
    ensure_profile(sessions, user)
    with extra_gateway(orchestra, "gateway-prefect-away", proxy.url, private_database) as gateway:
        job_ids = []
        for n in range(3):
            body = {"jobType": "image_fast", "prompt": f"later {n}", "metadata": SMALL}
            answer = httpx.post(
                f"{gateway}/queue-job", json=body, headers=orchestra.headers(user), timeout=30
            )
            assert answer.status_code == 201 and answer.json()["debug"]["workersOnline"] is None
            job_ids.append(uuid.UUID(answer.json()["job"]["id"]))
        refused_before = proxy.refused
        _wait_until(lambda: proxy.refused > refused_before + 2, timeout=30)  # the dispatcher kept trying
        with sessions() as session:
            assert all(session.get_one(Job, job_id).flow_run_id is None for job_id in job_ids)
        proxy.up = True
        back = time.monotonic()
        run_ids = [flow_run_of(sessions, job_id, timeout=back + 5 - time.monotonic()) for job_id in job_ids]
        assert None not in run_ids
    with orchestra.client() as client:
        for job_id, run_id in zip(job_ids, run_ids, strict=True):
            assert run_id is not None and client.read_flow_run(run_id).idempotency_key == str(job_id)


def _wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.1)
