"""The interactive API docs, served with no CDN: Swagger UI at `/docs` and ReDoc at `/redoc`, their
scripts, styles and icon from the `fastapi-offline` package (MIT; Swagger UI 5 and ReDoc 2 as shipped
there), mounted at `/docs/assets`; and the security of the operations whose way in is no dependency
FastAPI sees (the signed `job-callback`).

FastAPI's own pages load their assets from a CDN, blank without internet; these are the same pages
(`get_swagger_ui_html`, `get_redoc_html`) pointed at the package's files.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.encoders import jsonable_encoder
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from ourvidz.api.deps import SERVICE_KEY
from ourvidz.api.routes.callbacks import verified_body

ASSETS_PACKAGE = "fastapi_offline"  # its `static/`: swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js
ASSETS_PATH = "/docs/assets"
DOCS_PATH, REDOC_PATH, OAUTH2_REDIRECT_PATH = "/docs", "/redoc", "/docs/oauth2-redirect"
SIGNED_CALLBACK = (
    "Or signed per Standard Webhooks with the callback secret (`webhook-id`, `webhook-timestamp`, "
    "`webhook-signature`), which needs no scheme here; the service key is also accepted as "
    "`Authorization: Bearer <service key>`."
)


def install_docs(app: FastAPI) -> None:
    """Serve the docs pages and their assets; `app` is made with `docs_url=None, redoc_url=None`."""
    app.mount(ASSETS_PATH, StaticFiles(packages=[(ASSETS_PACKAGE, "static")]), name="docs-assets")

    def asset(request: Request, name: str) -> str:
        return f"{request.scope.get('root_path', '')}{ASSETS_PATH}/{name}"

    def openapi_url(request: Request) -> str:
        return f"{request.scope.get('root_path', '')}{app.openapi_url}"

    @app.get(DOCS_PATH, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url(request),
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=OAUTH2_REDIRECT_PATH,
            swagger_js_url=asset(request, "swagger-ui-bundle.js"),
            swagger_css_url=asset(request, "swagger-ui.css"),
            swagger_favicon_url=asset(request, "favicon.png"),
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    @app.get(OAUTH2_REDIRECT_PATH, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_PATH, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url(request),
            title=f"{app.title} - ReDoc",
            redoc_js_url=asset(request, "redoc.standalone.js"),
            redoc_favicon_url=asset(request, "favicon.png"),
            with_google_fonts=False,
        )


def _calls(dependant: Dependant) -> set[Any]:
    """Every dependency `dependant` resolves, however deep."""
    calls = {dependant.call}
    for sub in dependant.dependencies:
        calls |= _calls(sub)
    return calls


def add_callback_security(schema: dict[str, Any], routers: Iterable[APIRouter]) -> None:
    """The service key on each documented operation of `routers` (served at the root) that reads a
    signed callback body: `verified_body` checks the key by hand, so FastAPI lists no scheme for it.
    Idempotent: the document is cached and this runs on each `app.openapi()`."""
    name = SERVICE_KEY.scheme_name
    model = jsonable_encoder(SERVICE_KEY.model, by_alias=True, exclude_none=True)  # as FastAPI writes it
    schema.setdefault("components", {}).setdefault("securitySchemes", {}).setdefault(name, model)
    for router in routers:
        for route in router.routes:
            if not (isinstance(route, APIRoute) and verified_body in _calls(route.dependant)):
                continue
            for method in route.methods:
                operation = schema["paths"].get(route.path_format, {}).get(method.lower())
                if operation is None or {name: []} in operation.setdefault("security", []):
                    continue
                operation["security"].append({name: []})
                operation["description"] = (
                    f"{operation.get('description', '').rstrip()}\n\n{SIGNED_CALLBACK}".lstrip()
                )
