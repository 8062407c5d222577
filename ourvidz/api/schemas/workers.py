"""Worker registration, worker health, admin images and the self-check.

Registration takes the spec's bodies (`{workerType, url}`, `{workerUrl, capabilities,
maxConcurrentChats}`) and the seed workers' own (`{worker_url, auto_registered, registration_method,
worker_type, capabilities: {name: bool}, timestamp}`); answers carry the fields of both.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from ourvidz.api.schemas.common import Request, SimpleResponse, either
from ourvidz.jobs.create import Url

WorkerType = Literal["sdxl", "wan", "video", "chat", "moderation"]
Protocol = Literal["openai", "ourvidz"]
SEED_CHAT_WORKER_TYPE = "pure_inference_engine"  # what the seed's chat worker calls itself


class UpdateWorkerUrlRequest(Request):
    """`workerType` defaults to `wan`: the seed's Wan worker registers itself without one."""

    worker_type: WorkerType = either("workerType", "worker_type", default="wan")
    url: Url = either("url", "worker_url", "workerUrl", default=...)
    auto_registered: bool | None = either("auto_registered", "autoRegistered")


class RegisterChatWorkerRequest(Request):
    worker_url: Url = either("workerUrl", "worker_url", default=...)
    capabilities: list[str] | dict[str, Any] = Field(default_factory=list, max_length=50)
    max_concurrent_chats: int = either(
        "maxConcurrentChats", "max_concurrent_chats", default=1, ge=1, le=10_000
    )
    protocol: Protocol | None = Field(
        default=None,
        description="`openai`: POST /v1/chat/completions; `ourvidz`: the OurVidz chat worker's "
        "POST /enhance and POST /chat. Default: `ourvidz` for the seed's chat worker's own body "
        "(`auto_registered` or `worker_type` sent), else `openai`.",
    )
    auto_registered: bool | None = either("auto_registered", "autoRegistered")
    worker_type: str | None = either("worker_type", "workerType", max_length=64)

    def chosen_protocol(self) -> Protocol:
        if self.protocol is not None:
            return self.protocol
        seed_body = self.auto_registered is not None or self.worker_type == SEED_CHAT_WORKER_TYPE
        return "ourvidz" if seed_body else "openai"

    def capability_names(self) -> list[str]:
        """The capabilities as names; the seed's object form lists those it sets true."""
        if isinstance(self.capabilities, dict):
            return [str(name)[:64] for name, on in self.capabilities.items() if on is True]
        return self.capabilities


class RegistrationInfo(BaseModel):
    autoRegistered: bool
    registrationMethod: str
    detectionMethod: str
    lastUpdated: str
    lastRegistrationAttempt: str


class WorkerRegistered(SimpleResponse):
    """A registration's answer: ours (`message`, `details`) and the seed's fields for it."""

    workerUrl: str
    worker_url: str
    healthStatus: Literal["healthy", "unhealthy"]
    responseTimeMs: float
    healthError: str | None = None
    registrationInfo: RegistrationInfo
    updatedAt: str
    auto_registered: bool


class ActiveWorkerRequest(Request):
    worker_type: WorkerType = either("worker_type", "workerType", default="chat")


class WorkerUrlResponse(BaseModel):
    """The spec's WorkerUrlResponse, plus the seed's snake_case fields."""

    success: bool
    workerUrl: str
    isHealthy: bool
    healthError: str | None = None
    registrationInfo: RegistrationInfo | None = None
    worker_url: str
    worker_type: str
    responseTimeMs: float
    workerCapabilities: list[Any] = Field(default_factory=list)


class WorkerHealth(BaseModel):
    status: Literal["healthy", "unhealthy"]
    responseTime: float


class HealthCheckResponse(BaseModel):
    workers: dict[str, WorkerHealth]
    overallStatus: Literal["healthy", "degraded", "unhealthy"]


class CheckResult(BaseModel):
    ok: bool
    seconds: float
    detail: str


class SelfCheckResponse(BaseModel):
    success: bool
    checks: dict[str, CheckResult]
