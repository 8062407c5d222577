"""The Prefect UI as an operator uses it, in a real browser (headless Chromium): the generation
deployment's Run form, filled in and submitted, starts a generation that completes like any job."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from sqlalchemy import select

from ourvidz.db.models import Job
from ourvidz.jobs.create import OPERATOR_USER_ID
from ourvidz.orchestration.names import deployment_name
from tests.e2e.conftest import Orchestra

CHROMIUM = "/usr/bin/chromium"  # Debian's (`apt-get install chromium`; .ci/run installs it)
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert shutil.which(CHROMIUM), f"{CHROMIUM} is needed for the Prefect UI tests: apt-get install chromium"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


def _field(page: Page, name: str):  # type: ignore[no-untyped-def]
    """One parameter of the Run form, by its label."""
    return page.locator(
        f'.schema-form-property:has(.schema-form-property__label:text-is("{name} (Optional)"))'
    )


def test_the_run_form_starts_a_generation(orchestra: Orchestra, browser: Browser) -> None:
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
