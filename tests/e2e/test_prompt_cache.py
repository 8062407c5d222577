"""Prompt templates reach other processes: an edit in the table, the scheduled refresh flow (or the
admin endpoint), then the gateway process and the GPU worker process both use the new template."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.enhancement.batch import enhance_prompts
from flows.enhancement.refresh import ARTIFACT_KEY, refresh_prompt_cache
from ourvidz.db.models import PromptTemplate
from ourvidz.jobs.create import ensure_profile
from ourvidz.prompts.templates import bump_version
from tests.e2e.conftest import Orchestra

MARKER = "quiet harbour finish"
BODY = {"prompt": "a lighthouse at dusk", "jobType": "image_high"}


@pytest.fixture
def rules_template(orchestra: Orchestra) -> Iterator[str]:
    """Adds a rules template for Wan high quality straight in the table; removed (and refreshed) after."""
    name = f"test-rules-{uuid.uuid4().hex[:8]}"
    yield name
    with orchestra.sessions.begin() as session:
        session.execute(sa.delete(PromptTemplate).where(PromptTemplate.template_name == name))
    bump_version(orchestra.sessions, reason="test cleanup")


def _add_rules_template(orchestra: Orchestra, name: str) -> None:
    row = PromptTemplate(template_name=name, use_case="rules", model_family="wan", quality="high")
    row.system_prompt = f"{{prompt}}, {MARKER}"
    with orchestra.sessions.begin() as session:
        session.add(row)


def _enhanced(orchestra: Orchestra, user: uuid.UUID) -> str:
    answer = httpx.post(
        f"{orchestra.gateway_url}/enhance-prompt", json=BODY, headers=orchestra.headers(user), timeout=30
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["enhanced_prompt"])


@pytest.mark.usefixtures("as_orchestra")
def test_a_table_edit_reaches_the_gateway_and_the_worker_after_the_scheduled_refresh(
    orchestra: Orchestra, rules_template: str
) -> None:
    user = uuid.uuid4()
    ensure_profile(orchestra.sessions, user)
    assert MARKER not in _enhanced(orchestra, user)  # the gateway has its templates cached now
    _add_rules_template(orchestra, rules_template)
    time.sleep(1.0)  # several cache checks: the version has not moved, so nothing reloads
    assert MARKER not in _enhanced(orchestra, user)

    state = asyncio.run(refresh_prompt_cache())
    assert state["changed"] is True
    assert asyncio.run(refresh_prompt_cache())["changed"] is False  # nothing new: no reload anywhere
    deadline = time.monotonic() + 5
    while MARKER not in (enhanced := _enhanced(orchestra, user)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert enhanced == f"a lighthouse at dusk, {MARKER}"

    job_id = orchestra.submit("image_high", metadata={"width": 64, "height": 64, "steps": 2, "enhance": True})
    job = orchestra.wait_final([job_id])[job_id]
    assert (job.enhancement_strategy, job.enhanced_prompt) == ("rules", f"a lighthouse at dusk, {MARKER}")
    with orchestra.client() as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[ARTIFACT_KEY]))
        )
    assert any("reload requested" in str(a.data) for a in artifacts)
    assert any("unchanged, no reload" in str(a.data) for a in artifacts)


def test_the_admin_refresh_reaches_the_gateway(orchestra: Orchestra, rules_template: str) -> None:
    user = uuid.uuid4()
    ensure_profile(orchestra.sessions, user)
    assert MARKER not in _enhanced(orchestra, user)
    _add_rules_template(orchestra, rules_template)
    refresh = httpx.post(
        f"{orchestra.gateway_url}/refresh-prompt-cache", headers=orchestra.headers(admin=True), timeout=30
    )
    assert refresh.status_code == 200 and refresh.json()["details"]["changed"] is True
    time.sleep(1.0)  # one check interval of the gateway process (0.5 s in these tests)
    assert _enhanced(orchestra, user) == f"a lighthouse at dusk, {MARKER}"


@pytest.mark.usefixtures("as_orchestra")
def test_batch_enhancement_refuses_prohibited_prompts_and_reports_the_rest() -> None:
    prompts = ["a lighthouse at dusk", "a red fox in fresh snow", "a zorblax with a child"]
    results = asyncio.run(enhance_prompts(prompts, "sdxl_image_fast"))
    assert [r["enhancement_strategy"] for r in results] == ["rules", "rules", "refused"]
    assert results[2]["enhanced_prompt"] == "" and results[2]["error"] == "CONTENT_PROHIBITED"
    assert all(r["token_count"] <= 75 for r in results)
    assert results[0]["enhanced_prompt"].startswith("a lighthouse at dusk")
