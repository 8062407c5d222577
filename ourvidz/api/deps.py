"""What every route depends on: the gateway's long-lived state, and who is calling.

Every endpoint declares one caller dependency; none is open: a user token, an admin, or a worker
holding the service key. Admin means the signed token says so or the `user_roles` table does; the
table is read only where being an admin changes the answer, so a plain user request costs no database
round trip here. Tokens are verified with PyJWT (HS256 only, audience and expiry required), service
keys are compared in constant time.

The OpenAPI document declares both ways in (`BEARER`, `SERVICE_KEY`: FastAPI's security classes, with
`auto_error=False`): the caller dependencies take them as parameters, so each operation lists the
schemes it accepts and Swagger UI offers to authorize. They only declare: the headers are still read
here (`bearer_token`, `has_service_key`), so what is accepted and every refusal's body stay as they are.
"""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.api.errors import ApiError, not_found
from ourvidz.api.hub import EventHub
from ourvidz.api.ratelimit import RateLimits
from ourvidz.api.replay import ReplayGuard
from ourvidz.auth import InvalidToken, Principal, Role, decode_token
from ourvidz.config import Settings
from ourvidz.db.models import Job, UserRole
from ourvidz.egress import EgressPolicy
from ourvidz.jobs.content import content_policy
from ourvidz.jobs.lifecycle import Announcer
from ourvidz.jobs.references import ReferenceRules
from ourvidz.orchestration.pool import PoolWatch
from ourvidz.orchestration.runs import FlowRuns
from ourvidz.policy import ContentPolicy
from ourvidz.storage import Storage

SERVICE_KEY_HEADER = "x-service-key"
BEARER = HTTPBearer(
    scheme_name="bearerAuth",
    bearerFormat="JWT",
    description="A user's token: `Authorization: Bearer <JWT>` (HS256, `aud` and `exp` required; admins "
    "by `app_metadata.roles` or a `user_roles` row).",
    auto_error=False,
)
SERVICE_KEY = APIKeyHeader(
    name=SERVICE_KEY_HEADER,
    scheme_name="serviceKey",
    description=f"Workers: `{SERVICE_KEY_HEADER}: $OURVIDZ_SERVICE_KEY`.",
    auto_error=False,
)
# declared, not read (see the module's docstring)
BearerScheme = Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]
ServiceKeyScheme = Annotated[str | None, Security(SERVICE_KEY)]


@dataclass
class Gateway:
    """What the gateway process holds for its whole life."""

    settings: Settings
    sessions: sessionmaker[Session]
    storage: Storage
    limits: RateLimits
    replays: ReplayGuard
    runs: FlowRuns
    pool: PoolWatch
    announcer: Announcer  # webhooks' first attempts in the background: answers never wait for them
    rules: ReferenceRules  # what a job may name outside itself: reference models, URLs users choose
    worker_egress: EgressPolicy  # where registered worker URLs may point
    events: EventHub | None = None

    def policy(self) -> ContentPolicy:
        """The content policy of this gateway's vocabularies, re-read when an operator changed them."""
        return content_policy(self.settings)


async def gateway(request: Request) -> Gateway:
    """The gateway state; async so that FastAPI resolves it without a thread-pool hop."""
    return request.app.state.gateway


GatewayDep = Annotated[Gateway, Depends(gateway)]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def principal_from_token(gw: Gateway, token: str | None) -> Principal:
    if token is None:
        raise ApiError(
            401, "UNAUTHORIZED", "a bearer token is required", headers={"www-authenticate": "Bearer"}
        )
    secret = gw.settings.jwt_secret
    assert secret is not None
    try:
        return decode_token(secret.get_secret_value(), gw.settings.jwt_audience, token)
    except InvalidToken:
        raise ApiError(
            401, "INVALID_TOKEN", "the token is invalid or expired", headers={"www-authenticate": "Bearer"}
        ) from None


def with_granted_roles(gw: Gateway, principal: Principal) -> Principal:
    """The principal, made admin when `user_roles` grants it (the token may predate the grant)."""
    if principal.is_admin:
        return principal
    with gw.sessions() as session:
        query = select(UserRole.id).where(UserRole.user_id == principal.user_id, UserRole.role == Role.ADMIN)
        if session.scalar(query) is None:
            return principal
    return Principal(principal.user_id, principal.roles | {Role.ADMIN})


async def current_user(request: Request, gw: GatewayDep, _bearer: BearerScheme) -> Principal:
    """The token's principal; async (a signature check, no I/O) to spare each request a thread hop."""
    return principal_from_token(gw, bearer_token(request))


def current_admin(user: Annotated[Principal, Depends(current_user)], gw: GatewayDep) -> Principal:
    user = with_granted_roles(gw, user)
    if not user.is_admin:
        raise ApiError(403, "FORBIDDEN", "this endpoint is for admins")
    return user


def has_service_key(request: Request, gw: Gateway) -> bool:
    given = request.headers.get(SERVICE_KEY_HEADER)
    key = gw.settings.service_key
    # bytes: compare_digest refuses str with non-ASCII characters (a client's header is no 500)
    return (
        given is not None
        and key is not None
        and hmac.compare_digest(given.encode(), key.get_secret_value().encode())
    )


def service_or_admin(
    request: Request, gw: GatewayDep, _key: ServiceKeyScheme, _bearer: BearerScheme
) -> Principal | None:
    """A worker with the service key (None), or an admin user."""
    if has_service_key(request, gw):
        return None
    user = with_granted_roles(gw, principal_from_token(gw, bearer_token(request)))
    if not user.is_admin:
        raise ApiError(403, "FORBIDDEN", "the service key or an admin token is required")
    return user


def owned_job(gw: Gateway, user: Principal, job_id: uuid.UUID) -> Job:
    """The job if the caller owns it or is an admin; 404 otherwise (its existence stays hidden)."""
    with gw.sessions() as session:
        job = session.get(Job, job_id)
    if job is None or (job.user_id != user.user_id and not with_granted_roles(gw, user).is_admin):
        raise not_found("job")
    return job


User = Annotated[Principal, Depends(current_user)]
Admin = Annotated[Principal, Depends(current_admin)]
ServiceOrAdmin = Annotated[Principal | None, Depends(service_or_admin)]
