"""The spec's error body `{error, code, details, timestamp}` for every failure, with its status codes.

Client mistakes are 4xx with a stable `code`; validation never leaks pydantic internals; the core's
refusals (`JobError`, a content `PolicyError`) keep their codes; a database that cannot be reached is
503; anything unexpected is a logged 500 with no internals in the body.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ourvidz.api.schemas.common import InvalidText
from ourvidz.jobs.errors import Conflict, Forbidden, InvalidJob, JobError, NotFound, OrchestratorUnavailable
from ourvidz.policy import ContentCheckUnavailable, ContentProhibited, ContentTierNotAllowed, PolicyError

logger = logging.getLogger(__name__)

STATUS_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
    503: "SERVICE_UNAVAILABLE",
}
JOB_ERROR_STATUS: dict[type[JobError], int] = {
    InvalidJob: 400, Forbidden: 403, NotFound: 404, Conflict: 409, OrchestratorUnavailable: 503,
}  # fmt: skip


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status, self.code, self.message, self.details = status, code, message, details
        self.headers = headers or {}
        super().__init__(message)


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": message, "code": code, "details": details, "timestamp": datetime.now(UTC).isoformat()}


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: Any = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status, headers=headers)


def not_found(what: str) -> ApiError:
    return ApiError(404, "NOT_FOUND", f"{what} not found")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(JobError)
    async def _job_error(_request: Request, exc: JobError) -> JSONResponse:
        status = next((code for kind, code in JOB_ERROR_STATUS.items() if isinstance(exc, kind)), 400)
        return error_response(status, exc.code, exc.message, exc.details)

    @app.exception_handler(PolicyError)
    async def _refused(_request: Request, exc: PolicyError) -> JSONResponse:
        return error_response(403, exc.code, str(exc), policy_details(exc))

    @app.exception_handler(ContentCheckUnavailable)
    async def _check_unavailable(_request: Request, exc: ContentCheckUnavailable) -> JSONResponse:
        return error_response(503, exc.code, f"{exc}; retry shortly", headers={"Retry-After": "5"})

    @app.exception_handler(RequestValidationError)
    @app.exception_handler(ValidationError)  # a body a route parses itself (a signed callback)
    async def _invalid(_request: Request, exc: RequestValidationError | ValidationError) -> JSONResponse:
        details = [_field_error(dict(error)) for error in exc.errors()]
        return error_response(400, "INVALID_PARAMETERS", "the request is not valid", details)

    @app.exception_handler(InvalidText)
    async def _invalid_text(_request: Request, exc: InvalidText) -> JSONResponse:
        details = [{"field": exc.field, "message": exc.message}]
        return error_response(400, "INVALID_PARAMETERS", "the request is not valid", details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = STATUS_CODES.get(exc.status_code, "HTTP_ERROR")
        message = exc.detail if isinstance(exc.detail, str) else code.lower().replace("_", " ")
        return error_response(exc.status_code, code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def _database_down(_request: Request, exc: Exception) -> JSONResponse:
        logger.error("database unreachable: %s", exc)
        return error_response(
            503, "DATABASE_UNAVAILABLE", "the job database cannot be reached; retry shortly"
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "INTERNAL_ERROR", "an unexpected error occurred")


def policy_details(exc: PolicyError) -> dict[str, Any] | None:
    if isinstance(exc, ContentTierNotAllowed):
        return {"requested": exc.requested, "allowed": exc.allowed, "ageVerified": exc.age_verified}
    if isinstance(exc, ContentProhibited):
        return {"category": exc.category, "layer": exc.layer, "reference": exc.text_hash}
    return None


def _field_error(error: dict[str, Any]) -> dict[str, str]:
    if error.get("type") == "json_invalid":
        return {"field": "body", "message": "the body is not valid JSON"}
    field = ".".join(str(part) for part in error["loc"] if part not in ("body", "query", "path", "header"))
    return {"field": field or "body", "message": str(error["msg"])}


class BodyLimit:
    """ASGI middleware: refuse bodies over `limit` bytes with 413, by header and by bytes actually read.

    A body without a Content-Length (chunked) is read here, up to the limit, before the route sees
    it: a refusal raised from inside the route's own body parsing would come back as FastAPI's 400."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.isdigit() or int(declared) > self.limit:
                await self._refuse(scope, receive, send)
            else:  # the server reads no more than the declared length
                await self.app(scope, receive, send)
            return
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                await self._refuse(scope, receive, send)
                return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: wait for the disconnect, as the server would
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Any, receive: Any, send: Any) -> None:
        response = error_response(413, "PAYLOAD_TOO_LARGE", f"request body is larger than {self.limit} bytes")
        await response(scope, receive, send)
