"""The interactive docs as a person opens them, offline: a real browser (Debian's headless Chromium)
that may reach nothing but the gateway on loopback renders Swagger UI and ReDoc from the package's
assets, and Swagger UI's Authorize sends the token it is given. Plus the schema's security schemes,
checked on the app without serving it."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, expect

from ourvidz.api.app import create_app
from ourvidz.api.deps import SERVICE_KEY_HEADER
from ourvidz.config import Settings
from tests.browser import chromium
from tests.gateway.conftest import Gateway

REDOCLY_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"  # redoc.standalone.js hides it on error


class _AnyText:
    """Equal to any text that is not empty (a scheme's description)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)


ANY_TEXT = _AnyText()


def test_the_schema_declares_who_may_call(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'jobs.db'}"))
    schema = app.openapi()
    assert schema["components"]["securitySchemes"] == {
        "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": ANY_TEXT},
        "serviceKey": {"type": "apiKey", "in": "header", "name": SERVICE_KEY_HEADER, "description": ANY_TEXT},
    }
    security = {
        f"{method.upper()} {path}": operation.get("security")
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    }
    either = [{"serviceKey": []}, {"bearerAuth": []}]
    assert security["POST /queue-job"] == security["GET /jobs/{job_id}"] == [{"bearerAuth": []}]
    assert security["GET /test-edge-functions"] == [{"bearerAuth": []}]  # an admin's token
    assert security["POST /update-worker-url"] == security["GET /metrics"] == either
    assert security["POST /job-callback"] == [{"serviceKey": []}]  # or signed: no scheme for that
    assert all(security.values()), [name for name, required in security.items() if not required]
    assert app.openapi()["paths"]["/job-callback"] == schema["paths"]["/job-callback"]  # added once


def test_the_docs_pages_load_nothing_from_outside(gateway: Gateway) -> None:
    """The pages name only the gateway's own assets, and those are served."""
    for page, assets in (
        ("/docs", ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png")),
        ("/redoc", ("redoc.standalone.js", "favicon.png")),
    ):
        html = httpx.get(f"{gateway.url}{page}", timeout=30)
        assert html.status_code == 200, page
        linked = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html.text)
        assert sorted(linked) == sorted(f"/docs/assets/{name}" for name in assets), (page, linked)
        for url in linked:
            asset = httpx.get(f"{gateway.url}{url}", timeout=30)
            assert asset.status_code == 200 and len(asset.content) > 1000, url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


def _offline_page(browser: Browser, gateway: Gateway, blocked: list[str]) -> Page:
    """A page whose requests reach the gateway and nothing else (each one refused is noted)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})

    def only_the_gateway(route: Route) -> None:
        if route.request.url.startswith(f"{gateway.url}/"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_gateway)
    return page


def test_swagger_ui_renders_offline_and_authorizes(
    gateway: Gateway, browser: Browser, tmp_path_factory: pytest.TempPathFactory
) -> None:
    blocked: list[str] = []
    page = _offline_page(browser, gateway, blocked)
    page.goto(f"{gateway.url}/docs")
    operations = page.locator(".opblock")
    expect(operations.filter(has_text="/queue-job")).to_have_count(1, timeout=30_000)
    assert operations.count() == len([op for ops in gateway.app.openapi()["paths"].values() for op in ops])
    authorize = page.locator(".auth-wrapper button.authorize")
    expect(authorize).to_be_visible()

    # Authorize with a user's token: Swagger UI sends it, so an unknown job is a 404, not a 401
    authorize.click()
    dialog = page.locator(".dialog-ux .modal-ux")
    expect(dialog.get_by_text("bearerAuth")).to_be_visible()
    expect(dialog.get_by_text("serviceKey")).to_be_visible()
    shots = tmp_path_factory.mktemp("docs-page")
    page.screenshot(path=shots / "authorize.png")
    bearer = dialog.locator(".auth-container").filter(has_text="bearerAuth")
    token = gateway.token()
    bearer.locator("input").fill(token)
    bearer.locator("button.authorize").click()
    expect(bearer.get_by_role("heading", name="Authorized", exact=True)).to_be_visible()
    dialog.locator("button.close-modal").click()
    expect(authorize).to_have_class(re.compile(r"\blocked\b"))

    job = operations.filter(has=page.locator('[data-path="/jobs/{job_id}"]')).filter(
        has=page.locator(".opblock-summary-method", has_text="GET")
    )
    job.locator(".opblock-summary").click()
    job.locator("button.try-out__btn").click()
    job.locator('input[placeholder="job_id"]').fill(str(uuid.uuid4()))
    with page.expect_response(re.compile(r"/jobs/[0-9a-f-]{36}$")) as answer:
        job.locator("button.execute").click()
    assert answer.value.status == 404 and answer.value.json()["code"] == "NOT_FOUND"
    assert answer.value.request.headers["authorization"] == f"Bearer {token}"
    expect(job.locator(".live-responses-table tr.response .response-col_status")).to_have_text("404")
    page.screenshot(path=shots / "docs.png", full_page=True)
    page.close()
    assert blocked == []  # the page asked for nothing outside the gateway


def test_redoc_renders_offline(
    gateway: Gateway, browser: Browser, tmp_path_factory: pytest.TempPathFactory
) -> None:
    blocked: list[str] = []
    page = _offline_page(browser, gateway, blocked)
    page.goto(f"{gateway.url}/redoc")
    expect(page.locator("h1", has_text="OurVidz gateway")).to_be_visible(timeout=30_000)
    queue_job = page.locator('[data-section-id="tag/jobs/operation/queue_job_queue_job_post"]')
    expect(queue_job.get_by_role("heading", name="Queue Job")).to_be_visible()
    expect(queue_job.get_by_role("heading", name="Authorizations:")).to_be_visible()
    expect(queue_job.get_by_text("bearerAuth", exact=True)).to_be_visible()
    page.screenshot(path=tmp_path_factory.mktemp("redoc-page") / "redoc.png")
    # ReDoc's one outside request is the "API docs by Redocly" badge's logo, dropped when unreachable
    expect(page.locator('img[alt="redocly logo"]')).to_have_count(0)
    page.close()
    assert set(blocked) <= {REDOCLY_LOGO}
