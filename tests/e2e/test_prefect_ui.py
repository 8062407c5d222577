"""The Prefect UI as an operator uses it, in a real browser (headless Chromium): the generation
deployment's Run form, filled in and submitted, starts a generation that completes like any job."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    DeploymentFilter,
    DeploymentFilterId,
)
from sqlalchemy import select

from ourvidz.db.models import Job
from ourvidz.jobs.create import OPERATOR_USER_ID
from ourvidz.orchestration.names import deployment_name
from tests.browser import chromium
from tests.e2e.conftest import Orchestra


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where the browser tests leave their screenshots: OURVIDZ_SCREENSHOT_DIR (CI keeps it), else a
    temporary folder."""
    folder = Path(os.environ.get("OURVIDZ_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _field(page: Page, name: str):  # type: ignore[no-untyped-def]
    """One parameter of the Run form, by its label."""
    return page.locator(
        f'.schema-form-property:has(.schema-form-property__label:text-is("{name} (Optional)"))'
    )


def test_the_run_form_starts_a_generation(orchestra: Orchestra, browser: Browser, screenshots: Path) -> None:
    with orchestra.client() as client:
        deployment = client.read_deployment_by_name(deployment_name("sdxl"))
    ui = orchestra.api_url.removesuffix("/api")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{ui}/deployments/deployment/{deployment.id}/run")
    job_type = _field(page, "job_type").locator("textarea")
    assert job_type.input_value() == "sdxl_image_fast"  # the deployment's default
    _field(page, "prompt").locator("textarea").fill("a lighthouse from the form")
    for name, value in (("width", "64"), ("height", "64"), ("steps", "2")):
        field = _field(page, name)
        field.get_by_role("button", name="int", exact=True).click()
        field.locator("input").fill(value)
    submitted_at = time.time()
    page.get_by_role("button", name="Submit", exact=True).click()
    page.wait_for_url("**?tab=Runs", timeout=30_000)  # back on the deployment, its runs shown
    page.close()

    with orchestra.client() as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
        )
    (run,) = [r for r in runs if r.parameters.get("prompt") == "a lighthouse from the form"]
    assert run.created is not None and run.created.timestamp() >= submitted_at - 5
    job_id = _job_of(orchestra, run.id)
    job = orchestra.wait_final([job_id])[job_id]
    assert (job.status, job.user_id) == ("completed", OPERATOR_USER_ID)
    finished = orchestra.wait_flow_run(job)
    assert finished.state_type.value == "COMPLETED" and finished.name == f"sdxl_image_fast-{job_id}"
    listed = httpx.get(f"{orchestra.gateway_url}/jobs/{job_id}", headers=orchestra.headers(OPERATOR_USER_ID))
    assert (
        listed.status_code == 200 and listed.json()["job"]["original_prompt"] == "a lighthouse from the form"
    )
    _the_run_page_shows_the_job(orchestra, ui, browser, finished.id, f"sdxl_image_fast-{job_id}", screenshots)


def _the_run_page_shows_the_job(
    orchestra: Orchestra, ui: str, browser: Browser, run_id: uuid.UUID, name: str, shots: Path
) -> None:
    """The run's page: its name and tags, and on its Artifacts tab the summary (the prompt) and the
    picture (loaded: the browser opened the gateway's file link)."""
    with orchestra.client() as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    (picture_id,) = [a.id for a in artifacts if a.type == "image"]
    page = browser.new_page(viewport={"width": 1400, "height": 1400})
    page.goto(f"{ui}/runs/flow-run/{run_id}")
    page.get_by_text(name).first.wait_for(timeout=30_000)
    for tag in ("sdxl_image_fast", "queue:sdxl", f"owner:{OPERATOR_USER_ID}"):
        page.get_by_text(tag, exact=True).first.wait_for(timeout=10_000)
    page.screenshot(path=shots / "run-page.png", full_page=True)
    page.get_by_text("Artifacts", exact=True).first.click()
    page.get_by_text("sdxl_image_fast job").first.wait_for(timeout=30_000)  # the summary's card
    page.get_by_text("image 1 (seed").first.wait_for(timeout=30_000)  # the picture's and the link's
    page.screenshot(path=shots / "run-page-artifacts.png", full_page=True)
    page.get_by_text("sdxl_image_fast job").first.click()  # the summary: the prompt, owner, credits
    page.get_by_text("a lighthouse from the form").first.wait_for(timeout=30_000)
    page.get_by_text(str(OPERATOR_USER_ID)).first.wait_for(timeout=10_000)
    page.screenshot(path=shots / "run-summary.png", full_page=True)
    page.goto(f"{ui}/artifacts/artifact/{picture_id}")  # the picture, loaded from the gateway's file link
    picture = page.locator("img[src*='/files/sdxl_image_fast/']").first
    picture.wait_for(timeout=30_000)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=picture.element_handle())
    page.screenshot(path=shots / "run-picture.png", full_page=True)
    page.close()


def _job_of(orchestra: Orchestra, run_id: uuid.UUID, timeout: float = 120) -> uuid.UUID:
    """The job a run made of its parameters (once a worker has started the run)."""
    deadline = time.monotonic() + timeout
    while True:
        with orchestra.sessions() as session:
            job_id = session.scalar(select(Job.id).where(Job.flow_run_id == run_id))
        if job_id is not None:
            return job_id
        assert time.monotonic() < deadline, "the run made no job"
        time.sleep(0.2)
