"""The operator's way in: a generation started with `prefect deployment run` creates its job through
the gateway's checks, runs it, and leaves it to its owner's gateway reads; a bad parameter fails the
run at once with the code the gateway would answer, and no job is made."""

from __future__ import annotations

import re
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
from prefect.client.schemas.objects import StateType
from sqlalchemy import func, select

from ourvidz.db.models import Job, UsageLog
from ourvidz.jobs.create import OPERATOR_USER_ID
from tests.e2e.conftest import OURVIDZ, Orchestra

PREFECT = str(Path(OURVIDZ[0]).with_name("prefect"))
SMALL = ["-p", "width=64", "-p", "height=64", "-p", "steps=2"]


def _run(orchestra: Orchestra, deployment: str, *params: str) -> uuid.UUID:
    """`prefect deployment run` with --watch: the run's id once it is over."""
    result = subprocess.run(
        [PREFECT, "deployment", "run", deployment, *params, "--watch", "--watch-interval", "1",
         "--watch-timeout", "300"],
        env=orchestra.stack.env, capture_output=True, text=True, timeout=360,
    )  # fmt: skip
    found = re.search(r"UUID: ([0-9a-f-]{36})", result.stdout)
    assert found, result.stdout + result.stderr
    return uuid.UUID(found.group(1))


def test_prefect_deployment_run_generates_for_the_operator(orchestra: Orchestra) -> None:
    run_id = _run(
        orchestra, "generate/sdxl", "-p", "job_type=sdxl_image_fast", "-p", 'prompt="a lighthouse"', *SMALL
    )
    with orchestra.client() as client:
        run = client.read_flow_run(run_id)
    assert run.state_type is StateType.COMPLETED, run.state
    with orchestra.sessions() as session:
        job = session.scalars(select(Job).where(Job.flow_run_id == run_id)).one()
        charged = session.scalar(select(UsageLog.credits_consumed).where(UsageLog.job_id == job.id))
    assert (job.user_id, job.status, job.original_prompt, charged) == (
        OPERATOR_USER_ID,
        "completed",
        "a lighthouse",
        1,
    )
    assert run.name == f"sdxl_image_fast-{job.id}"
    answer = httpx.get(f"{orchestra.gateway_url}/jobs/{job.id}", headers=orchestra.headers(OPERATOR_USER_ID))
    assert answer.status_code == 200 and answer.json()["assets"][0]["type"] == "image"


@pytest.mark.parametrize(
    ("deployment", "params", "code"),
    [
        ("generate/sdxl", ["-p", "job_type=sdxl_video", "-p", "prompt=x"], "INVALID_JOB_TYPE"),
        ("generate/sdxl", ["-p", "job_type=video_fast", "-p", "prompt=x"], "INVALID_JOB_TYPE"),  # wan's
        ("generate/sdxl", ["-p", "prompt=   "], "MISSING_PROMPT"),
        ("generate/sdxl", ["-p", "prompt=x", "-p", "num_images=2"], "INVALID_PARAMETERS"),
        ("generate/wan", ["-p", "prompt=x", "-p", "content_tier=explicit"], "CONTENT_TIER_NOT_ALLOWED"),
        ("generate/sdxl", ["-p", "prompt=zorblax with a child"], "CONTENT_PROHIBITED"),
        ("generate/sdxl", ["-p", "prompt=x", "-p", f"job_id={uuid.uuid4()}"], "INVALID_PARAMETERS"),
    ],
    ids=[
        "unknown type",
        "other queue",
        "blank prompt",
        "two images",
        "tier",
        "prohibited",
        "prompt and job id",
    ],
)
def test_a_bad_parameter_fails_the_run_at_once_with_the_gateways_code(
    orchestra: Orchestra, deployment: str, params: list[str], code: str
) -> None:
    with orchestra.sessions() as session:
        jobs_before = session.scalar(select(func.count()).select_from(Job))
    run_id = _run(orchestra, deployment, *params)
    with orchestra.client() as client:
        run = client.read_flow_run(run_id)
    assert run.state_type is StateType.FAILED and run.run_count == 1
    assert run.state is not None and str(run.state.message).startswith(f"{code}: ")
    with orchestra.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == jobs_before
