"""Worker management (spec section 3), admin generation and the live self-check."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Response
from prefect.client.schemas.objects import WorkerStatus
from sqlalchemy import text

from ourvidz.api.dispatch import deployment_name
from ourvidz.api.errors import ApiError
from ourvidz.api.routes.jobs import queue_job
from ourvidz.api.schemas import (
    AdminImageRequest,
    CheckResult,
    HealthCheckResponse,
    QueueJobRequest,
    QueueJobResponse,
    RegisterChatWorkerRequest,
    RegistrationInfo,
    SelfCheckResponse,
    SimpleResponse,
    UpdateWorkerUrlRequest,
    WorkerHealth,
    WorkerUrlResponse,
)
from ourvidz.api.security import Admin, ServiceOrAdmin, User
from ourvidz.api.state import Gateway, gateway
from ourvidz.jobs.recovery import undispatched_jobs
from ourvidz.registry import load_worker, probe, record_health, save_worker

router = APIRouter(tags=["workers"])
DISPATCH_STALL_SECONDS = 60
STALLED_SHOWN = 100
GatewayDep = Annotated[Gateway, Depends(gateway)]
GPU_WORKER_TYPES = ("sdxl", "wan", "video")
CHECK_TIMEOUT_SECONDS = 5.0


@router.get("/get-active-worker-url", response_model=WorkerUrlResponse)
def get_active_worker_url(response: Response, user: User, gw: GatewayDep) -> WorkerUrlResponse:
    """The registered chat worker's URL, checked just now."""
    gw.limits.hit("health", user.user_id, response)
    worker = load_worker(gw.sessions, "chat")
    if worker is None:
        raise ApiError(404, "NOT_FOUND", "no chat worker is registered")
    health = probe(worker["url"])
    record_health(gw.sessions, "chat", worker["url"], health)
    return WorkerUrlResponse(
        success=health.healthy, workerUrl=worker["url"], isHealthy=health.healthy, healthError=health.error,
        registrationInfo=RegistrationInfo(**worker["registrationInfo"]),
    )  # fmt: skip


@router.get("/health-check-workers", response_model=HealthCheckResponse)
async def health_check_workers(response: Response, user: User, gw: GatewayDep) -> HealthCheckResponse:
    """GPU workers from Prefect (online workers of the pool), the chat worker from a probe."""
    await asyncio.to_thread(gw.limits.hit, "health", user.user_id, response)
    # From the dispatcher's background view of the pool, so a slow Prefect never slows this read.
    online = gw.dispatcher is not None and gw.dispatcher.workers_online is True
    age = 0.0 if gw.dispatcher is None else gw.dispatcher.workers_online_age
    gpu = WorkerHealth(status="healthy" if online else "unhealthy", responseTime=age)
    workers = dict.fromkeys(GPU_WORKER_TYPES, gpu)
    chat = await asyncio.to_thread(load_worker, gw.sessions, "chat")
    if chat is None:
        workers["chat"] = WorkerHealth(status="unhealthy", responseTime=0.0)
    else:
        health = await asyncio.to_thread(probe, chat["url"])
        await asyncio.to_thread(record_health, gw.sessions, "chat", chat["url"], health)
        workers["chat"] = WorkerHealth(
            status="healthy" if health.healthy else "unhealthy", responseTime=health.seconds
        )
    healthy = sum(worker.status == "healthy" for worker in workers.values())
    overall = "healthy" if healthy == len(workers) else "unhealthy" if healthy == 0 else "degraded"
    return HealthCheckResponse(workers=workers, overallStatus=overall)


@router.post("/update-worker-url", response_model=SimpleResponse)
def update_worker_url(
    body: UpdateWorkerUrlRequest, _caller: ServiceOrAdmin, gw: GatewayDep
) -> SimpleResponse:
    saved = save_worker(gw.sessions, body.worker_type, str(body.url), "update-worker-url")
    return SimpleResponse(message=f"{body.worker_type} worker URL updated", details=saved)


@router.post("/register-chat-worker", response_model=SimpleResponse)
def register_chat_worker(
    body: RegisterChatWorkerRequest, _caller: ServiceOrAdmin, gw: GatewayDep
) -> SimpleResponse:
    extra = {
        "capabilities": body.capabilities, "maxConcurrentChats": body.max_concurrent_chats,
        "protocol": body.protocol,
    }  # fmt: skip
    saved = save_worker(gw.sessions, "chat", str(body.worker_url), "register-chat-worker", extra)
    return SimpleResponse(message="chat worker registered", details=saved)


@router.post("/generate-admin-image", status_code=201, response_model=QueueJobResponse)
def generate_admin_image(
    body: AdminImageRequest, response: Response, background: BackgroundTasks, admin: Admin, gw: GatewayDep
) -> QueueJobResponse:
    """An image job for moderation and testing, queued like any other (owned by the admin)."""
    job_type = f"sdxl_image_{body.quality}" if body.model == "sdxl" else f"image_{body.quality}"
    request = QueueJobRequest.model_validate({"job_type": job_type, "prompt": body.prompt})
    return queue_job(request, response, background, admin, gw)


@router.get("/test-edge-functions", response_model=SelfCheckResponse)
async def test_edge_functions(_admin: Admin, gw: GatewayDep) -> SelfCheckResponse:
    """A live check of everything the gateway depends on; `success` only if all of it answers."""
    checks = {
        "database": await _check(asyncio.to_thread(_database, gw)),
        "storage": await _check(asyncio.to_thread(_storage, gw)),
        "prefect_api": await _check(_prefect_api(gw)),
        "deployments": await _check(_deployments(gw)),
        "work_pool": await _check(_work_pool(gw)),
        "chat_worker": await _check(asyncio.to_thread(_chat_worker, gw)),
        "dispatch": await _check(asyncio.to_thread(_dispatch, gw)),
    }
    return SelfCheckResponse(success=all(check.ok for check in checks.values()), checks=checks)


async def _check(probe_call: Any) -> CheckResult:
    started = time.perf_counter()
    try:
        detail = await asyncio.wait_for(probe_call, CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        return CheckResult(ok=False, seconds=time.perf_counter() - started, detail="no answer in time")
    except Exception as exc:
        return CheckResult(
            ok=False, seconds=time.perf_counter() - started, detail=f"{type(exc).__name__}: {exc}"
        )
    return CheckResult(ok=True, seconds=time.perf_counter() - started, detail=str(detail))


def _database(gw: Gateway) -> str:
    with gw.sessions() as session:
        session.execute(text("SELECT 1"))
    return "reachable"


def _storage(gw: Gateway) -> str:
    key = f"self-check/{uuid.uuid4()}.txt"
    gw.storage.put("system", key, b"ok")
    try:
        if gw.storage.get("system", key) != b"ok":
            raise RuntimeError("read back different bytes")
    finally:
        gw.storage.delete("system", key)
    return f"write, read and delete under {gw.storage.url}"


def _client(gw: Gateway):  # type: ignore[no-untyped-def]
    if gw.dispatcher is None:
        raise RuntimeError("the gateway has no Prefect client")
    return gw.dispatcher.client


async def _prefect_api(gw: Gateway) -> str:
    response = await _client(gw).api_healthcheck()
    if response is not None:
        raise RuntimeError(str(response))
    return "healthy"


async def _deployments(gw: Gateway) -> str:
    names = [deployment_name(queue) for queue in ("sdxl", "wan")]
    for name in names:
        await _client(gw).read_deployment_by_name(name)
    return ", ".join(names)


async def _work_pool(gw: Gateway) -> str:
    pool = gw.settings.work_pool
    workers = await _client(gw).read_workers_for_work_pool(pool)
    online = [w.name for w in workers if w.status == WorkerStatus.ONLINE]
    if not online:
        raise RuntimeError(f"no worker of pool {pool!r} is online")
    return f"{len(online)} worker(s) online in {pool!r}"


def _dispatch(gw: Gateway) -> str:
    """Jobs should get their flow run within seconds; a backlog this old means nothing dispatches."""
    mode = gw.settings.dispatch
    stalled = undispatched_jobs(gw.sessions, DISPATCH_STALL_SECONDS, STALLED_SHOWN)
    if stalled:
        count = f"{len(stalled)}{'+' if len(stalled) == STALLED_SHOWN else ''}"
        hint = "is `ourvidz dispatcher` running?" if mode == "dispatcher" else "is Prefect reachable?"
        raise RuntimeError(
            f"{count} job(s) queued without a flow run for over {DISPATCH_STALL_SECONDS} s "
            f"(OURVIDZ_DISPATCH={mode}): {hint}"
        )
    return f"no job waits over {DISPATCH_STALL_SECONDS} s for its flow run (OURVIDZ_DISPATCH={mode})"


def _chat_worker(gw: Gateway) -> str:
    worker = load_worker(gw.sessions, "chat")
    if worker is None:
        raise RuntimeError("no chat worker is registered")
    health = probe(worker["url"])
    record_health(gw.sessions, "chat", worker["url"], health)
    if not health.healthy:
        raise RuntimeError(f"{worker['url']} is unhealthy: {health.error}")
    return f"{worker['url']} answered in {health.seconds * 1000:.0f} ms"
