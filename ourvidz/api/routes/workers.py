"""Worker management (spec section 3), admin generation and the live self-check."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Response

from ourvidz.api.deps import Admin, Gateway, GatewayDep, ServiceOrAdmin, User
from ourvidz.api.errors import ApiError
from ourvidz.api.routes.jobs import queued_answer
from ourvidz.api.schemas.jobs import AdminImageRequest, QueueJobResponse
from ourvidz.api.schemas.workers import (
    ActiveWorkerRequest,
    CheckResult,
    HealthCheckResponse,
    RegisterChatWorkerRequest,
    RegistrationInfo,
    SelfCheckResponse,
    UpdateWorkerUrlRequest,
    WorkerHealth,
    WorkerRegistered,
    WorkerUrlResponse,
)
from ourvidz.auth import Principal
from ourvidz.egress import UrlNotAllowed
from ourvidz.registry.probes import probe
from ourvidz.registry.workers import CHAT, Registration, record_probe, register, registration
from ourvidz.selfcheck import self_check

router = APIRouter(tags=["workers"])
GPU_WORKER_TYPES = ("sdxl", "wan", "video")


@router.get("/get-active-worker-url", response_model=WorkerUrlResponse)
def get_active_worker_url(
    response: Response, user: User, gw: GatewayDep, query: Annotated[ActiveWorkerRequest, Query()]
) -> WorkerUrlResponse:
    """The registered worker's URL (the chat worker unless `worker_type` names another), checked just now."""
    return _active_worker(gw, user, query.worker_type, response)


@router.post("/get-active-worker-url", response_model=WorkerUrlResponse)
def post_active_worker_url(
    response: Response, user: User, gw: GatewayDep, body: ActiveWorkerRequest | None = None
) -> WorkerUrlResponse:
    """The same, asked as the seed's frontend asks it: a POST with `{worker_type}`."""
    return _active_worker(gw, user, body.worker_type if body else "chat", response)


def _active_worker(gw: Gateway, user: Principal, kind: str, response: Response) -> WorkerUrlResponse:
    gw.limits.hit("health", user.user_id, response)
    worker = registration(gw.sessions, kind)
    if worker is None:
        raise ApiError(404, "NOT_FOUND", f"no {kind} worker is registered")
    health = probe(worker.url, gw.worker_egress)
    record_probe(gw.sessions, kind, "", worker.url, health)
    return WorkerUrlResponse(
        success=health.healthy, workerUrl=worker.url, isHealthy=health.healthy, healthError=health.error,
        registrationInfo=RegistrationInfo(**worker.info()), worker_url=worker.url, worker_type=kind,
        responseTimeMs=round(health.seconds * 1000, 1), workerCapabilities=worker.capabilities,
    )  # fmt: skip


@router.get("/health-check-workers", response_model=HealthCheckResponse)
async def health_check_workers(response: Response, user: User, gw: GatewayDep) -> HealthCheckResponse:
    """GPU workers from Prefect (online workers of the pool), the chat worker from a probe."""
    await asyncio.to_thread(gw.limits.hit, "health", user.user_id, response)
    # the pool as the gateway last saw it in the background, so a slow Prefect never slows this read
    gpu = WorkerHealth(status="healthy" if gw.pool.online else "unhealthy", responseTime=gw.pool.age)
    workers = dict.fromkeys(GPU_WORKER_TYPES, gpu)
    chat = await asyncio.to_thread(registration, gw.sessions, CHAT)
    if chat is None:
        workers["chat"] = WorkerHealth(status="unhealthy", responseTime=0.0)
    else:
        health = await asyncio.to_thread(probe, chat.url, gw.worker_egress)
        await asyncio.to_thread(record_probe, gw.sessions, CHAT, "", chat.url, health)
        workers["chat"] = WorkerHealth(
            status="healthy" if health.healthy else "unhealthy", responseTime=health.seconds
        )
    healthy = sum(worker.status == "healthy" for worker in workers.values())
    overall = "healthy" if healthy == len(workers) else "unhealthy" if healthy == 0 else "degraded"
    return HealthCheckResponse(workers=workers, overallStatus=overall)


@router.post("/update-worker-url", response_model=WorkerRegistered)
def update_worker_url(
    body: UpdateWorkerUrlRequest, _caller: ServiceOrAdmin, gw: GatewayDep
) -> WorkerRegistered:
    saved = register(gw.sessions, body.worker_type, _allowed(gw, str(body.url), "url"), "update-worker-url")
    return _registered(gw, saved, f"{body.worker_type} worker URL updated", body.auto_registered)


@router.post("/register-chat-worker", response_model=WorkerRegistered)
def register_chat_worker(
    body: RegisterChatWorkerRequest, _caller: ServiceOrAdmin, gw: GatewayDep
) -> WorkerRegistered:
    url = _allowed(gw, str(body.worker_url), "workerUrl")
    saved = register(
        gw.sessions, CHAT, url, "register-chat-worker", protocol=body.chosen_protocol(),
        capabilities=body.capability_names(), max_concurrent=body.max_concurrent_chats,
    )  # fmt: skip
    return _registered(gw, saved, "chat worker registered", body.auto_registered)


def _allowed(gw: Gateway, url: str, field: str) -> str:
    """`url` if the worker egress policy allows it, else 400 URL_NOT_ALLOWED (nothing is registered)."""
    try:
        gw.worker_egress.check(url)
    except UrlNotAllowed as exc:
        raise ApiError(
            400, "URL_NOT_ALLOWED", f"{field} is not allowed: {exc} (OURVIDZ_WORKER_EGRESS_ALLOW)",
            {"field": field},
        ) from None  # fmt: skip
    return url


def _registered(gw: Gateway, saved: Registration, message: str, auto: bool | None) -> WorkerRegistered:
    """The answer to a registration, with the worker probed once now (as the seed's functions do; an
    unhealthy worker stays registered and is passed over until a probe finds it healthy)."""
    health = probe(saved.url, gw.worker_egress)
    record_probe(gw.sessions, saved.kind, saved.name, saved.url, health)
    info = saved.info()
    return WorkerRegistered(
        message=message, details=saved.details(), workerUrl=saved.url, worker_url=saved.url,
        healthStatus="healthy" if health.healthy else "unhealthy", healthError=health.error,
        responseTimeMs=round(health.seconds * 1000, 1), registrationInfo=RegistrationInfo(**info),
        updatedAt=info["lastRegistrationAttempt"],
        auto_registered=info["autoRegistered"] if auto is None else auto,
    )  # fmt: skip


@router.post("/generate-admin-image", status_code=201, response_model=QueueJobResponse)
def generate_admin_image(
    body: AdminImageRequest, response: Response, admin: Admin, gw: GatewayDep
) -> QueueJobResponse:
    """An image job for moderation and testing, queued like any other (owned by the admin)."""
    gw.limits.hit("jobs", admin.user_id, response)
    return queued_answer(gw, admin, body.queue_request(), response, None)


@router.get("/test-edge-functions", response_model=SelfCheckResponse)
async def test_edge_functions(_admin: Admin, gw: GatewayDep) -> SelfCheckResponse:
    """A live check of everything the gateway depends on; `success` only if all of it answers."""
    checks = await self_check(gw.sessions, gw.storage, gw.runs, gw.settings.work_pool, gw.worker_egress)
    results = {name: CheckResult(ok=c.ok, seconds=c.seconds, detail=c.detail) for name, c in checks.items()}
    return SelfCheckResponse(success=all(check.ok for check in checks.values()), checks=results)
